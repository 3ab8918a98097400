"""Conditioning wrappers around MONAI diffusion networks, and safe weight loading."""

from __future__ import annotations

from monai_siamese.networks.conditioning import ConcatConditionedUNet
from monai_siamese.networks.weights import (
    adapt_input_channels,
    load_pretrained,
    load_state_dict_file,
    load_weights,
    save_weights,
)

__all__ = [
    "ConcatConditionedUNet",
    "adapt_input_channels",
    "load_pretrained",
    "load_state_dict_file",
    "load_weights",
    "save_weights",
]
