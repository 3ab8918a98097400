"""Thin bundle scripts: everything lives in the ``monai_siamese`` package, which the configs import directly."""

from monai_siamese.cli import run_bundle  # noqa: F401
