"""Lightweight stochastic mask generator with hierarchical randomness and plausibility checks.

MedDiff-FT (Xie et al., "MedDiff-FT: Data-Efficient Diffusion Model Fine-tuning with Structural Guidance for
Controllable Medical Image Synthesis") names a "lightweight stochastic mask generator" that "enhances diversity
through hierarchical randomness injection"; its public code does not include it, so this design is ours:

- global level: random flip, rotation, isotropic scale and translation (MONAI ``RandFlip`` / ``RandAffine``);
- regional level: a smooth random deformation field (MONAI ``Rand2DElastic`` / ``Rand3DElastic``);
- boundary level: low-frequency noise added to the smoothed one-hot mask before the arg-max, which moves class
  boundaries by about ``boundary_pixels`` pixels.

All levels warp the one-hot mask with bilinear interpolation and take the arg-max, so boundaries stay smooth and
no isolated pixels appear. A generated mask is accepted only when it passes :class:`MaskStatistics` checks learnt
from the real masks (per-class area ratios, connected components, class adjacency, nesting); otherwise the
generator retries with new randomness and, if every try fails, returns the input mask unchanged.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Rand2DElastic, Rand3DElastic, RandAffine, Randomizable
from scipy import ndimage

__all__ = ["MaskStatistics", "StochasticMaskGenerator", "RandStochasticMaskd"]


def _np_label(label: torch.Tensor | np.ndarray) -> np.ndarray:
    arr = label.detach().cpu().numpy() if isinstance(label, torch.Tensor) else np.asarray(label)
    return arr[0] if arr.ndim >= 3 and arr.shape[0] == 1 else arr


def _adjacency(lab: np.ndarray, num_classes: int) -> np.ndarray:
    """``adj[a, b]``: fraction of all class-boundary pixel pairs (4/6-connectivity) between classes ``a`` and
    ``b`` (symmetric)."""
    counts = np.zeros((num_classes, num_classes), dtype=np.float64)
    for axis in range(lab.ndim):
        a = np.take(lab, range(lab.shape[axis] - 1), axis=axis).ravel()
        b = np.take(lab, range(1, lab.shape[axis]), axis=axis).ravel()
        diff = a != b
        np.add.at(counts, (a[diff], b[diff]), 1.0)
    counts = counts + counts.T
    total = counts.sum() / 2
    return counts / total if total > 0 else counts


def _components(mask: np.ndarray) -> int:
    return int(ndimage.label(mask)[1])


@dataclass
class MaskStatistics:
    """Plausibility statistics of a set of real masks, and the checks a generated mask must pass.

    - area ratio of each class to the foreground, within the real range widened by ``area_tolerance``;
    - connected components per class and of the whole foreground, at most the real maximum plus
      ``component_tolerance`` (no class islands floating outside the body);
    - class adjacency: classes that never touch in the real masks (e.g. a nested class and the background) may
      share at most ``adjacency_tolerance`` of the class-boundary length (a few pixels at the resolution);
    - nesting (reported in ``nested``): classes that never touch background in the real masks; the adjacency
      check keeps them enclosed.

    Args:
        num_classes: classes including background.
        area_tolerance: relative widening of the real area-ratio range.
        component_tolerance: extra components allowed over the real maximum.
        adjacency_tolerance: extra fraction of boundary length two classes may share.
    """

    num_classes: int
    area_tolerance: float = 0.25
    component_tolerance: int = 0
    adjacency_tolerance: float = 0.02
    area_min: np.ndarray = field(default_factory=lambda: np.zeros(0))
    area_max: np.ndarray = field(default_factory=lambda: np.zeros(0))
    max_components: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))
    max_fg_components: int = 1
    adjacency: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    nested: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))

    @classmethod
    def from_masks(
        cls,
        masks: Sequence[torch.Tensor | np.ndarray],
        num_classes: int,
        area_tolerance: float = 0.25,
        component_tolerance: int = 0,
        adjacency_tolerance: float = 0.02,
    ) -> MaskStatistics:
        """Learn the statistics from real masks (2D or 3D integer labels, optionally channel-first)."""
        if not masks:
            raise ValueError("MaskStatistics needs at least one real mask")
        ratios, comps, fg_comps = [], [], []
        adj = np.zeros((num_classes, num_classes), dtype=np.float64)
        touches_bg = np.zeros(num_classes, dtype=bool)
        present = np.zeros(num_classes, dtype=bool)
        for m in masks:
            lab = _np_label(m).astype(np.int64)
            fg = lab > 0
            n_fg = max(int(fg.sum()), 1)
            counts = np.bincount(lab.ravel(), minlength=num_classes)[:num_classes]
            ratios.append(counts / n_fg)
            comps.append([_components(lab == c) for c in range(num_classes)])
            fg_comps.append(_components(fg))
            a = _adjacency(lab, num_classes)
            adj = np.maximum(adj, a)
            touches_bg |= a[0] > 0
            present |= counts > 0
        ratios_arr = np.asarray(ratios)
        stats = cls(num_classes, area_tolerance, component_tolerance, adjacency_tolerance)
        stats.area_min = ratios_arr.min(0) * (1 - area_tolerance)
        stats.area_max = ratios_arr.max(0) * (1 + area_tolerance)
        stats.max_components = np.asarray(comps).max(0)
        stats.max_fg_components = int(max(fg_comps))
        stats.adjacency = adj
        stats.nested = present & ~touches_bg
        stats.nested[0] = False
        return stats

    def problems(self, mask: torch.Tensor | np.ndarray) -> list[str]:
        """Reasons why ``mask`` is implausible (empty list: plausible)."""
        lab = _np_label(mask).astype(np.int64)
        out: list[str] = []
        fg = lab > 0
        if not fg.any():
            return ["empty foreground"]
        counts = np.bincount(lab.ravel(), minlength=self.num_classes)[: self.num_classes]
        ratio = counts / max(int(fg.sum()), 1)
        for c in range(1, self.num_classes):
            if ratio[c] < self.area_min[c] - 1e-9 or ratio[c] > self.area_max[c] + 1e-9:
                out.append(
                    f"class {c} area ratio {ratio[c]:.3f} outside [{self.area_min[c]:.3f}, {self.area_max[c]:.3f}]"
                )
            n = _components(lab == c)
            if n > self.max_components[c] + self.component_tolerance:
                out.append(f"class {c} has {n} components (real max {int(self.max_components[c])})")
        n_fg = _components(fg)
        if n_fg > self.max_fg_components + self.component_tolerance:
            out.append(f"foreground has {n_fg} components (real max {self.max_fg_components})")
        adj = _adjacency(lab, self.num_classes)
        new_contact = (self.adjacency == 0) & (adj > self.adjacency_tolerance)
        for a, b in np.argwhere(np.triu(new_contact, k=1)):
            out.append(f"classes {a} and {b} touch along {adj[a, b]:.3f} of the boundaries (never in the real masks)")
        return out

    def is_plausible(self, mask: torch.Tensor | np.ndarray) -> bool:
        return not self.problems(mask)


class StochasticMaskGenerator(Randomizable):
    """Generate a new mask from a real one with global, regional and boundary randomness (see module doc).

    Args:
        num_classes: classes including background.
        spatial_dims: 2 or 3.
        flip_prob: probability of a flip along each axis in ``flip_axes``.
        flip_axes: spatial axes that may be flipped (e.g. ``(0,)`` for left-right in RAS axial slices).
        rotate_range: maximum rotation in radians (in-plane for 2D).
        scale_range: maximum relative isotropic scale change.
        translate_fraction: maximum translation as a fraction of the size.
        elastic_spacing: control-point spacing of the smooth deformation, in pixels.
        elastic_magnitude: deformation magnitude range.
        boundary_pixels: width of the band where the boundary noise acts, in pixels (0: off).
        boundary_strength: amplitude of the boundary noise relative to the smoothed one-hot scores.
        statistics: plausibility checks (None: every mask accepted).
        max_tries: attempts before returning the input unchanged.
    """

    def __init__(
        self,
        num_classes: int,
        spatial_dims: int = 2,
        flip_prob: float = 0.5,
        flip_axes: Sequence[int] = (0,),
        rotate_range: float = 0.26,
        scale_range: float = 0.1,
        translate_fraction: float = 0.05,
        elastic_spacing: float = 32.0,
        elastic_magnitude: tuple[float, float] = (0.5, 1.0),
        boundary_pixels: float = 1.0,
        boundary_strength: float = 0.3,
        statistics: MaskStatistics | None = None,
        max_tries: int = 10,
    ) -> None:
        self.num_classes = num_classes
        self.spatial_dims = spatial_dims
        self.flip_prob = flip_prob
        self.flip_axes = tuple(flip_axes)
        self.rotate_range = rotate_range
        self.scale_range = scale_range
        self.translate_fraction = translate_fraction
        self.elastic_spacing = elastic_spacing
        self.elastic_magnitude = elastic_magnitude
        self.boundary_pixels = boundary_pixels
        self.boundary_strength = boundary_strength
        self.statistics = statistics
        self.max_tries = max_tries
        self.last_tries = 0
        self.last_accepted = True

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None):
        super().set_random_state(seed, state)
        return self

    def randomize(self, data: Any = None) -> None:  # randomness is drawn inside __call__ from self.R
        pass

    def _affine(self, size: Sequence[int]) -> RandAffine:
        rot = self.rotate_range
        rotate = (rot,) if self.spatial_dims == 2 else (rot, rot, rot)
        translate = [self.translate_fraction * s for s in size]
        aff = RandAffine(
            prob=1.0,
            rotate_range=rotate,
            scale_range=[self.scale_range] * self.spatial_dims,
            translate_range=translate,
            mode="bilinear",
            padding_mode="zeros",
        )
        aff.set_random_state(state=self.R)
        return aff

    def _elastic(self) -> Randomizable | None:
        if self.elastic_magnitude[1] <= 0:
            return None
        if self.spatial_dims == 2:
            el: Randomizable = Rand2DElastic(
                spacing=self.elastic_spacing,
                magnitude_range=self.elastic_magnitude,
                prob=1.0,
                mode="bilinear",
                padding_mode="zeros",
            )
        else:
            el = Rand3DElastic(
                sigma_range=(self.elastic_spacing / 2, self.elastic_spacing),
                magnitude_range=self.elastic_magnitude,
                prob=1.0,
                mode="bilinear",
                padding_mode="zeros",
            )
        el.set_random_state(state=self.R)
        return el

    def _boundary_noise(self, onehot: torch.Tensor) -> torch.Tensor:
        if self.boundary_pixels <= 0:
            return onehot
        size = onehot.shape[1:]
        # low-frequency noise: random values on a coarse grid, upsampled smoothly
        coarse = [max(2, int(round(s / max(4.0, 4 * self.boundary_pixels)))) for s in size]
        noise = torch.from_numpy(self.R.standard_normal((onehot.shape[0], *coarse)).astype(np.float32))
        mode = "bilinear" if self.spatial_dims == 2 else "trilinear"
        noise = F.interpolate(noise[None], size=tuple(size), mode=mode, align_corners=False)[0]
        # smoothing the one-hot turns it into a ramp of width ~2*boundary_pixels around each boundary
        k = int(2 * round(self.boundary_pixels) + 1)
        pool = F.avg_pool2d if self.spatial_dims == 2 else F.avg_pool3d
        smooth = pool(onehot[None], kernel_size=k, stride=1, padding=k // 2, count_include_pad=False)[0]
        # noise acts only in the band where classes mix (interiors keep max(smooth) = 1): no islands appear
        band = (1.0 - smooth.max(0).values).clamp(min=0.0) * 2.0
        return smooth + self.boundary_strength * noise * band

    def generate_once(self, label: torch.Tensor) -> torch.Tensor:
        """One draw, no plausibility check. ``label``: channel-first integer mask ``(1, *spatial)``."""
        lab = torch.as_tensor(label).long()
        onehot = F.one_hot(lab[0], self.num_classes).movedim(-1, 0).float()
        for axis in self.flip_axes:
            if self.R.random_sample() < self.flip_prob:
                onehot = torch.flip(onehot, dims=(axis + 1,))
        onehot = torch.as_tensor(self._affine(onehot.shape[1:])(onehot))
        el = self._elastic()
        if el is not None:
            onehot = torch.as_tensor(el(onehot))
        # padding with zeros leaves pixels with no class: they become background
        onehot[0] = torch.clamp(onehot[0] + (1.0 - onehot.sum(0)), min=0.0)
        scores = self._boundary_noise(onehot)
        return scores.argmax(0, keepdim=True).to(lab.dtype)

    def __call__(self, label: torch.Tensor) -> torch.Tensor:
        """A plausible new mask (or the input, if ``max_tries`` draws all fail the checks)."""
        meta = label.meta if isinstance(label, MetaTensor) else None
        for i in range(self.max_tries):
            out = self.generate_once(label)
            if self.statistics is None or self.statistics.is_plausible(out):
                self.last_tries, self.last_accepted = i + 1, True
                return MetaTensor(out, meta=meta) if meta is not None else out
        self.last_tries, self.last_accepted = self.max_tries, False
        return label


class RandStochasticMaskd(Randomizable, MapTransform):
    """Dictionary version of :class:`StochasticMaskGenerator`: replaces ``keys`` (integer masks) by generated
    masks and records ``mask_generated`` (False when every try failed the plausibility checks).

    Args:
        keys: integer mask keys.
        allow_missing_keys: skip missing keys.
        kwargs: :class:`StochasticMaskGenerator` arguments.
    """

    def __init__(self, keys: KeysCollection = "label", allow_missing_keys: bool = False, **kwargs: Any) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.generator = StochasticMaskGenerator(**kwargs)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None):
        super().set_random_state(seed, state)
        self.generator.set_random_state(state=self.R)
        return self

    def randomize(self, data: Any = None) -> None:
        pass

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.generator(d[key])
            d["mask_generated"] = self.generator.last_accepted
        return d
