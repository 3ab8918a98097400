"""Downstream evaluation: segmentation trained on real vs real + synthetic data (see issue 4)."""
