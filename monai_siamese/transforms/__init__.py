"""MONAI MapTransforms for mask conditioning, usable from bundle configs by ``_target_``."""

from __future__ import annotations

from monai_siamese.transforms.mask import (
    NULL_CONDITION,
    BatchMaskAblation,
    EncodeMaskd,
    MaskEncoding,
    RandConditionDropoutd,
    RandMaskAblationd,
    ablate_classes,
    class_presence,
    encode_mask,
    mask_channels,
    null_condition_like,
)

__all__ = [
    "NULL_CONDITION",
    "BatchMaskAblation",
    "EncodeMaskd",
    "MaskEncoding",
    "RandConditionDropoutd",
    "RandMaskAblationd",
    "ablate_classes",
    "class_presence",
    "encode_mask",
    "mask_channels",
    "null_condition_like",
]
