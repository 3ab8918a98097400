"""MONAI MapTransforms for mask conditioning, usable from bundle configs by ``_target_``."""

from __future__ import annotations

from monai_siamese.transforms.context import (
    ContextConditiond,
    ContextEdge,
    context_channels,
    encode_context,
    select_context,
)
from monai_siamese.transforms.geometry import (
    GeometricParams,
    RandPairGeometricd,
    random_geometric_params,
    sampling_grid,
    warp_image,
    warp_label,
)
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
)
from monai_siamese.transforms.mask_generator import MaskStatistics, RandStochasticMaskd, StochasticMaskGenerator
from monai_siamese.transforms.morphology import (
    ErodeLabeld,
    InpaintConditiond,
    distance_outside,
    editable_region,
    erode_label,
    structure_size,
)

__all__ = [
    "ContextConditiond",
    "ContextEdge",
    "context_channels",
    "encode_context",
    "select_context",
    "GeometricParams",
    "RandPairGeometricd",
    "random_geometric_params",
    "sampling_grid",
    "warp_image",
    "warp_label",
    "ErodeLabeld",
    "InpaintConditiond",
    "MaskStatistics",
    "RandStochasticMaskd",
    "StochasticMaskGenerator",
    "distance_outside",
    "editable_region",
    "erode_label",
    "structure_size",
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
]
