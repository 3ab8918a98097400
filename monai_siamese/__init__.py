"""monai-siamese: mask-conditioned diffusion models that synthesise medical image/label pairs for MONAI.

Methods: segmentation-guided diffusion (Konz et al., arXiv 2402.05210), Siamese-Diffusion (Qiu et al.,
arXiv 2505.06068) and MedDiff-FT data-efficient fine-tuning.
"""

from __future__ import annotations

__version__ = "0.1.0"

import logging as _logging
import warnings as _warnings

# MONAI logs a warning per DICOM reader set-up when NVIDIA's nvImageCodec is absent (always, on CPU machines)
_logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(_logging.ERROR)
_warnings.filterwarnings("ignore", message="NvImgCodecPydicomReader")

from monai_siamese.errors import install_excepthook as _install_excepthook  # noqa: E402

_install_excepthook()

from monai_siamese import data, diffusion, engines, inferers, masks, networks, transforms, utils  # noqa: E402,F401

__all__ = ["__version__", "data", "diffusion", "engines", "inferers", "masks", "networks", "transforms", "utils"]
