"""Intensity presets: CT window, MR percentile clip, 2D grey/RGB 0-255; all map to [-1, 1] and back."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from enum import Enum
from typing import Any, Sequence

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

__all__ = ["IntensityPreset", "ScaleIntensityPresetd", "to_unit_range", "from_unit_range"]

RANGE_KEY = "intensity_range"


class IntensityPreset(str, Enum):
    """How raw intensities map to the model's [-1, 1] range."""

    CT = "ct"  # fixed HU window
    MR = "mr"  # per-image percentile clip (of the voxels above the image minimum)
    RGB = "rgb"  # 8-bit colour, 0..255
    GREY = "grey"  # 8-bit grey, 0..255
    MINMAX = "minmax"  # per-image min..max


def to_unit_range(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """Clip ``x`` to ``[lo, hi]`` and scale it to ``[-1, 1]``."""
    scale = max(hi - lo, 1e-8)
    return (x.clamp(lo, hi) - lo) / scale * 2.0 - 1.0


def from_unit_range(x: torch.Tensor, lo: float | torch.Tensor, hi: float | torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`to_unit_range` (without the clip)."""
    return (x.clamp(-1, 1) + 1.0) / 2.0 * (hi - lo) + lo


class ScaleIntensityPresetd(MapTransform):
    """Scale images to [-1, 1] with a modality preset, recording the source range for the inverse.

    The ``[lo, hi]`` range used is stored under ``intensity_range`` so synthetic images can be written back in
    the source's units (HU for CT, the source scanner's range for MR, 0..255 for 2D images).

    Args:
        keys: image keys.
        preset: one of :class:`IntensityPreset`.
        window: HU window ``(lo, hi)`` for CT.
        percentiles: lower/upper percentiles for MR.
        range_key: key under which ``[lo, hi]`` is stored.
        allow_missing_keys: skip missing keys.
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        preset: IntensityPreset | str = IntensityPreset.MR,
        window: Sequence[float] = (-160.0, 240.0),
        percentiles: Sequence[float] = (0.5, 99.5),
        range_key: str = RANGE_KEY,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.preset = IntensityPreset(preset)
        self.window = (float(window[0]), float(window[1]))
        self.percentiles = (float(percentiles[0]), float(percentiles[1]))
        self.range_key = range_key

    def source_range(self, img: torch.Tensor) -> tuple[float, float]:
        """The ``(lo, hi)`` that maps to ``(-1, 1)`` for ``img``."""
        if self.preset == IntensityPreset.CT:
            return self.window
        if self.preset in (IntensityPreset.RGB, IntensityPreset.GREY):
            return 0.0, 255.0
        flat = img.detach().float().reshape(-1)
        if self.preset == IntensityPreset.MINMAX:
            return float(flat.min()), float(flat.max())
        # percentiles of the tissue, not of the (often dominant) exact background
        tissue = flat[flat > flat.min()]
        if tissue.numel() >= max(16, flat.numel() // 100):
            flat = tissue
        if flat.numel() > 4_000_000:  # quantile has a size limit; a strided subsample is exact enough
            flat = flat[:: flat.numel() // 4_000_000 + 1]
        q = torch.quantile(flat, torch.tensor([self.percentiles[0] / 100, self.percentiles[1] / 100]))
        lo, hi = float(q[0]), float(q[1])
        if hi <= lo:
            hi = lo + 1.0
        return lo, hi

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            lo, hi = self.source_range(img)
            out = to_unit_range(img.float(), lo, hi)
            d[key] = (
                out
                if isinstance(out, MetaTensor) or not isinstance(img, MetaTensor)
                else MetaTensor(out, meta=img.meta)
            )
            d[self.range_key] = torch.tensor([lo, hi], dtype=torch.float32)
        return d
