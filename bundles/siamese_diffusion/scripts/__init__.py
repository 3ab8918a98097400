"""Thin bundle scripts: the code lives in the ``monai_siamese`` package, which the configs import directly."""
