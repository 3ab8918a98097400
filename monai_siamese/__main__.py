"""``python -m monai_siamese``: see :mod:`monai_siamese.cli`."""

import sys

from monai_siamese.cli import main

sys.exit(main())
