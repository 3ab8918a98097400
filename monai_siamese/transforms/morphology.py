"""Morphology on integer masks: per-class label erosion (MedDiff-FT "mask corrosion"), region dilation by a
distance, and the inpainting condition (mask + image outside the editable region)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, RandomizableTransform
from scipy import ndimage

from monai_siamese.transforms.mask import MaskEncoding, encode_mask

__all__ = [
    "distance_outside",
    "erode_label",
    "ErodeLabeld",
    "editable_region",
    "structure_size",
    "InpaintConditiond",
]


def _np(x: torch.Tensor | np.ndarray) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def distance_outside(mask: torch.Tensor | np.ndarray) -> np.ndarray:
    """Euclidean distance (pixels) of every pixel to the nearest ``True`` pixel of ``mask`` (0 inside)."""
    m = _np(mask).astype(bool)
    if not m.any():
        return np.full(m.shape, np.inf, dtype=np.float32)
    return ndimage.distance_transform_edt(~m).astype(np.float32)


def erode_label(
    label: torch.Tensor | np.ndarray,
    radius: int | Mapping[int, int] | Sequence[int],
    against: str = "background",
    fill_value: int = 0,
    max_fraction: float = 1.0,
) -> np.ndarray:
    """Erode each class of an integer mask by its radius (pixels, Euclidean).

    Args:
        label: integer mask (any spatial dims, optionally channel-first with one channel).
        radius: one radius for all foreground classes, a ``{class: radius}`` mapping, or a per-class sequence.
        against: ``background``: a pixel of class ``c`` is removed when it lies within ``radius[c]`` of
            background (the boundary with the background shrinks, boundaries between classes stay);
            ``any``: within ``radius[c]`` of any other class.
        fill_value: class given to eroded pixels.
        max_fraction: a class is left as it is in this mask where erosion would remove more than this fraction
            of its pixels. Erosion is meant to trim the blurred edge off a structure (a few per cent of a blob's
            area: about ``2 * radius / R`` of a disc of radius ``R``); a structure about as thin as the radius
            (a ring of CSF around the brain, a vessel wall, a cortex) would lose a large share of itself instead,
            and a segmenter trained on such labels learns to miss it. 1.0: no limit.
    """
    lab = _np(label).astype(np.int64)
    out = lab.copy()
    classes = [int(c) for c in np.unique(lab) if c != 0]
    to_background = distance_outside(lab == 0) if against == "background" else None  # the same for every class
    for c in classes:
        if isinstance(radius, Mapping):
            r = int(radius.get(c, radius.get(str(c), 0)))  # type: ignore[arg-type]
        elif isinstance(radius, Sequence):
            r = int(radius[c]) if c < len(radius) else 0
        else:
            r = int(radius)
        if r <= 0:
            continue
        inside = lab == c
        dist = to_background if to_background is not None else distance_outside(~inside)
        removed = inside & (dist <= r)
        if removed.sum() > max_fraction * inside.sum():
            continue
        out[removed] = fill_value
    return out


class ErodeLabeld(MapTransform):
    """Per-class erosion of the written label (MedDiff-FT's mask corrosion): blurred generated boundaries do
    not become label noise.

    Args:
        keys: integer mask keys.
        radius: global radius, ``{class: radius}`` or a per-class list (index = class).
        against: ``background`` or ``any`` (see :func:`erode_label`).
        fill_value: class of eroded pixels.
        max_fraction: leave a class as it is in a mask where erosion would remove more than this fraction of
            its pixels (see :func:`erode_label`); 1.0: no limit.
        allow_missing_keys: skip missing keys.
    """

    def __init__(
        self,
        keys: KeysCollection = "label",
        radius: int | Mapping[int, int] | Sequence[int] = 1,
        against: str = "background",
        fill_value: int = 0,
        max_fraction: float = 1.0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if against not in ("background", "any"):
            raise ValueError(f"against must be 'background' or 'any', got {against!r}")
        if not 0.0 <= max_fraction <= 1.0:
            raise ValueError(f"max_fraction must be in [0, 1], got {max_fraction!r}")
        self.radius = radius
        self.against = against
        self.fill_value = fill_value
        self.max_fraction = max_fraction

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            lab = d[key]
            out = torch.as_tensor(self._erode(lab), dtype=torch.int64)
            d[key] = MetaTensor(out, meta=lab.meta) if isinstance(lab, MetaTensor) else out
        return d

    def _erode(self, label: torch.Tensor | np.ndarray) -> np.ndarray:
        return erode_label(label, self.radius, self.against, self.fill_value, self.max_fraction)

    def apply(self, label: torch.Tensor) -> torch.Tensor:
        """Erode one label tensor (for use as a function, e.g. a generator's ``label_fn``)."""
        return torch.as_tensor(self._erode(label), dtype=torch.int64)


def structure_size(mask: torch.Tensor | np.ndarray) -> float:
    """Equivalent diameter of the foreground, ``sqrt(area)`` in 2D (cube root of the volume in 3D)."""
    m = _np(mask).astype(bool)
    if m.ndim >= 3 and m.shape[0] == 1:
        m = m[0]
    return float(m.sum()) ** (1.0 / m.ndim)


def editable_region(
    foreground: torch.Tensor | np.ndarray, margin_fraction: float, min_margin: float = 1.0
) -> tuple[np.ndarray, float]:
    """The foreground dilated by ``max(min_margin, margin_fraction * structure_size)`` pixels; returns the region
    and the margin used."""
    fg = _np(foreground).astype(bool)
    margin = max(min_margin, margin_fraction * structure_size(fg))
    return distance_outside(fg) <= margin, margin


class InpaintConditiond(RandomizableTransform, MapTransform):
    """Inpainting condition for MedDiff-FT fine-tuning: ``cond = [encoded mask, image * (1 - region)]`` where
    ``region`` is the foreground of the mask (optionally of a second mask, e.g. the canvas's own label) dilated by
    a margin proportional to the structure's size; the margin fraction is drawn in ``margin_range`` per sample, so
    the model learns every region size the guiding mask uses at sampling.

    Args:
        image_key: image key (channel-first, [-1, 1]).
        label_key: integer mask that conditions the generation.
        num_classes: classes including background.
        encoding: mask encoding.
        margin_range: ``(low, high)`` margin fractions of the structure size.
        min_margin: minimum margin in pixels.
        extra_region_key: optional key of another integer mask whose foreground is also editable.
        output_key: key of the condition.
        region_key: key where the region (float ``(1, *spatial)``) is stored.
        fill_value: value of the image inside the region.
        append_region: also append the region as the last channel of the condition (``[mask, known, region]``,
            what a latent inpainting denoiser takes: see :class:`~monai_siamese.networks.ConditionMode`).
        condition_key: optional key of a condition already built for the mask (e.g. the 2.5D condition of
            :class:`~monai_siamese.transforms.ContextConditiond`) that replaces the encoded mask as the leading part:
            ``[condition, known(, region)]``.
    """

    def __init__(
        self,
        image_key: str = "image",
        label_key: str = "label",
        num_classes: int = 2,
        encoding: MaskEncoding | str = MaskEncoding.ONEHOT,
        margin_range: Sequence[float] = (0.02, 0.15),
        min_margin: float = 1.0,
        extra_region_key: str | None = None,
        output_key: str = "cond",
        region_key: str = "region",
        fill_value: float = 0.0,
        append_region: bool = False,
        condition_key: str | None = None,
    ) -> None:
        MapTransform.__init__(self, [image_key, label_key])
        RandomizableTransform.__init__(self, prob=1.0)
        self.image_key, self.label_key = image_key, label_key
        self.num_classes = num_classes
        self.encoding = MaskEncoding(encoding)
        self.margin_range = (float(margin_range[0]), float(margin_range[1]))
        self.min_margin = min_margin
        self.extra_region_key = extra_region_key
        self.output_key = output_key
        self.region_key = region_key
        self.fill_value = fill_value
        self.append_region = append_region
        self.condition_key = condition_key
        self._fraction = self.margin_range[1]

    def randomize(self, data: Any = None) -> None:
        self._fraction = float(self.R.uniform(*self.margin_range))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize()
        lab = torch.as_tensor(d[self.label_key]).long()
        fg = _np(lab[0] > 0)
        if self.extra_region_key is not None and self.extra_region_key in d:
            fg = fg | _np(torch.as_tensor(d[self.extra_region_key])[0] > 0)
        region, _ = editable_region(fg, self._fraction, self.min_margin)
        region_t = torch.from_numpy(region.astype(np.float32))[None]
        img = torch.as_tensor(d[self.image_key]).float()
        known = img * (1 - region_t) + self.fill_value * region_t
        if self.condition_key is not None:
            if self.condition_key not in d:
                raise KeyError(
                    f"InpaintConditiond: no '{self.condition_key}' condition in the item (keys {sorted(map(str, d))})"
                )
            lead = torch.as_tensor(d[self.condition_key]).float()
        else:
            lead = encode_mask(lab, self.num_classes, self.encoding)
        parts = [lead, known]
        if self.append_region:
            parts.append(region_t)
        d[self.output_key] = torch.cat(parts, dim=0)
        d[self.region_key] = region_t
        return d
