"""Mask sources: the conditioning masks of every generator, made from a regime's N real masks only.

Pick one with a name (``regime``, ``augmented``, ``generated``, ``interpolated``) or a weighted mixture
(``"augmented:0.5,interpolated:0.5"``), then :func:`write_mask_datalist` writes the masks (NIfTI with their source's
geometry), their canvas images and a MONAI datalist that a generator samples from; mask ``i`` of a run depends only
on ``(seed, i)`` and records its source, its regime mask(s) and its random parameters.
"""

from __future__ import annotations

from monai_siamese.masks.base import (
    BaseMaskSource,
    MaskSample,
    MaskSource,
    MaskSourceError,
    RegimeMask,
    border_contact,
    foreground_components,
    mask_problems,
    mask_seed,
)
from monai_siamese.masks.figure import mask_source_figure
from monai_siamese.masks.interpolation import AlignMode, PairingMode, interpolate_labels, signed_distance
from monai_siamese.masks.sources import (
    SOURCE_CLASSES,
    AugmentedMaskSource,
    GeneratedMaskSource,
    InterpolatedMaskSource,
    MixedMaskSource,
    RegimeMaskSource,
    build_mask_source,
    parse_mask_source,
)
from monai_siamese.masks.writer import (
    MaskDatalist,
    conditioning_entries,
    context_mask_source,
    load_regime_masks,
    write_mask_datalist,
)
from monai_siamese.transforms.geometry import GeometricParams, random_geometric_params, warp_image, warp_label

__all__ = [
    "AlignMode",
    "AugmentedMaskSource",
    "BaseMaskSource",
    "GeneratedMaskSource",
    "GeometricParams",
    "InterpolatedMaskSource",
    "MaskDatalist",
    "conditioning_entries",
    "MaskSample",
    "MaskSource",
    "MaskSourceError",
    "MixedMaskSource",
    "PairingMode",
    "RegimeMask",
    "RegimeMaskSource",
    "SOURCE_CLASSES",
    "border_contact",
    "build_mask_source",
    "context_mask_source",
    "foreground_components",
    "interpolate_labels",
    "load_regime_masks",
    "mask_problems",
    "mask_seed",
    "mask_source_figure",
    "parse_mask_source",
    "random_geometric_params",
    "signed_distance",
    "warp_image",
    "warp_label",
    "write_mask_datalist",
]
