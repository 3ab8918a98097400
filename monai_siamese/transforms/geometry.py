"""Explicit random geometric + elastic transforms, applied identically to a mask and its image (2D and 3D).

MONAI's ``RandAffine`` / ``Rand2DElastic`` draw their parameters internally and do not model GenSeg's crop/pad; here
the parameters are drawn once into :class:`GeometricParams` (recorded as provenance, and enough to redo the
transform), turned into one sampling grid with MONAI's ``create_grid`` / ``create_rotate`` / ``create_shear`` /
``create_scale`` / ``create_translate``, and applied with MONAI's ``Resample``: the label as a bilinear-warped
one-hot followed by an arg-max (smooth boundaries, no holes), the image bilinearly with the same grid.

The same transforms serve twice: :class:`~monai_siamese.masks.AugmentedMaskSource` makes new conditioning masks with
them, and :class:`RandPairGeometricd` applies them to the generators' training pairs, so that a generator learns to
render exactly the family of masks that source will ask it for.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.transforms import MapTransform, RandomizableTransform, Resample
from monai.transforms.utils import create_grid, create_rotate, create_scale, create_shear, create_translate
from monai.utils import ensure_tuple

__all__ = [
    "GeometricParams",
    "random_geometric_params",
    "sampling_grid",
    "warp_label",
    "warp_image",
    "RandPairGeometricd",
]


@dataclass
class GeometricParams:
    """One geometric + elastic transform, in terms of what happens to the anatomy.

    Applied in this order: flips, crop/pad (each side, then resized back to the size, as GenSeg's crop/pad),
    isotropic scale, rotation, shear, translation, then the elastic displacement.

    Args:
        flip: spatial axes that are mirrored.
        crop_pad: per axis ``[low side, high side]`` fractions of the size; > 0 pads, < 0 crops.
        scale: apparent size factor of the anatomy (1.2: 20 % larger).
        rotate_degrees: in-plane angle (2D) or angles about axes 0, 1, 2 (3D).
        shear_degrees: shear angles (2 in 2D, 6 in 3D, MONAI ``create_shear`` order).
        translate: shift per axis, as a fraction of the size.
        elastic_magnitude: standard deviation of the control-point displacements, fraction of the smallest size.
        elastic_points: control points per axis of the smooth displacement field.
        elastic_seed: seed of the control-point displacements.
    """

    flip: list[int] = field(default_factory=list)
    crop_pad: list[list[float]] = field(default_factory=list)
    scale: float = 1.0
    rotate_degrees: list[float] = field(default_factory=list)
    shear_degrees: list[float] = field(default_factory=list)
    translate: list[float] = field(default_factory=list)
    elastic_magnitude: float = 0.0
    elastic_points: int = 5
    elastic_seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def random_geometric_params(
    rng: np.random.Generator,
    spatial_dims: int,
    flip_prob: float = 0.5,
    flip_axes: Sequence[int] = (0,),
    crop_pad_fraction: float = 0.1,
    scale_range: Sequence[float] = (0.8, 1.2),
    rotate_degrees: float = 15.0,
    shear_degrees: float = 8.0,
    translate_fraction: float = 0.1,
    elastic_magnitude: float = 0.015,
    elastic_points: int = 5,
) -> GeometricParams:
    """Draw a :class:`GeometricParams` (uniform ranges, symmetric about the identity)."""
    d = int(spatial_dims)
    flips = [int(a) for a in flip_axes if a < d and rng.random() < flip_prob]
    crop_pad = [[float(v) for v in rng.uniform(-crop_pad_fraction, crop_pad_fraction, 2)] for _ in range(d)]
    scale = float(rng.uniform(scale_range[0], scale_range[1]))
    rot = [float(v) for v in rng.uniform(-rotate_degrees, rotate_degrees, 1 if d == 2 else 3)]
    shear = [float(v) for v in rng.uniform(-shear_degrees, shear_degrees, 2 if d == 2 else 6)]
    translate = [float(v) for v in rng.uniform(-translate_fraction, translate_fraction, d)]
    return GeometricParams(
        flip=flips,
        crop_pad=crop_pad,
        scale=scale,
        rotate_degrees=rot,
        shear_degrees=shear,
        translate=translate,
        elastic_magnitude=float(elastic_magnitude),
        elastic_points=int(elastic_points),
        elastic_seed=int(rng.integers(0, 2**31 - 1)),
    )


def _forward_matrix(params: GeometricParams, shape: Sequence[int]) -> np.ndarray:
    """Homogeneous matrix mapping centred input coordinates to centred output coordinates."""
    d = len(shape)
    m = np.eye(d + 1)
    for axis in params.flip:
        f = np.eye(d + 1)
        f[axis, axis] = -1.0
        m = f @ m
    if params.crop_pad:
        # pad p_lo / p_hi of the size on each side (crop when negative), then resize back to the size
        cp = np.eye(d + 1)
        for axis, (lo, hi) in enumerate(params.crop_pad):
            size = float(shape[axis])
            k = 1.0 / (1.0 + lo + hi)
            cp[axis, axis] = k
            cp[axis, d] = (size / 2 + lo * size) * k - size / 2
        m = cp @ m
    m = np.asarray(create_scale(d, [params.scale] * d)) @ m
    if params.rotate_degrees:
        angles = [math.radians(a) for a in params.rotate_degrees]
        m = np.asarray(create_rotate(d, angles[0] if d == 2 else angles)) @ m
    if params.shear_degrees:
        m = np.asarray(create_shear(d, [math.tan(math.radians(a)) for a in params.shear_degrees])) @ m
    if params.translate:
        m = np.asarray(create_translate(d, [t * s for t, s in zip(params.translate, shape)])) @ m
    return m


def _elastic_field(params: GeometricParams, shape: Sequence[int]) -> torch.Tensor | None:
    if params.elastic_magnitude <= 0:
        return None
    d = len(shape)
    rng = np.random.default_rng(params.elastic_seed)
    pts = max(2, int(params.elastic_points))
    coarse = rng.standard_normal((d, *([pts] * d))) * params.elastic_magnitude * min(shape)
    mode = "bicubic" if d == 2 else "trilinear"
    dense = F.interpolate(torch.as_tensor(coarse, dtype=torch.float32)[None], size=tuple(shape), mode=mode)
    return dense[0]


def sampling_grid(params: GeometricParams, shape: Sequence[int]) -> torch.Tensor:
    """MONAI ``Resample`` grid ``(d + 1, *shape)``: for each output pixel, the input coordinate it samples."""
    shape = tuple(int(s) for s in shape)
    grid = torch.as_tensor(create_grid(shape), dtype=torch.float64)
    inv = torch.as_tensor(np.linalg.inv(_forward_matrix(params, shape)), dtype=torch.float64)
    d = len(shape)
    out = (inv @ grid.reshape(d + 1, -1)).reshape(grid.shape)
    disp = _elastic_field(params, shape)
    if disp is not None:
        out[:d] += disp.double()
    return out.float()


def _resample(x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    out = Resample(mode="bilinear", padding_mode="zeros", norm_coords=True)(x, grid)
    return torch.as_tensor(out)


def warp_label(
    label: np.ndarray, params: GeometricParams, num_classes: int, grid: torch.Tensor | None = None
) -> np.ndarray:
    """Transform an integer mask ``(*spatial)``: one-hot, bilinear warp, arg-max; outside the field is background.
    ``grid``: ``sampling_grid(params, label.shape)`` when the caller has it already (the same transform for several
    arrays of one shape)."""
    lab = torch.as_tensor(np.asarray(label), dtype=torch.long)
    onehot = F.one_hot(lab, num_classes).movedim(-1, 0).float()
    warped = _resample(onehot, sampling_grid(params, lab.shape) if grid is None else grid)
    warped[0] = warped[0] + (1.0 - warped.sum(0)).clamp(min=0.0)
    return warped.argmax(0).numpy().astype(np.int64)


def warp_image(image: np.ndarray, params: GeometricParams, grid: torch.Tensor | None = None) -> np.ndarray:
    """Transform an image ``(C, *spatial)`` with the same grid as :func:`warp_label`; outside the field it takes the
    image's minimum (the background of MR and CT alike). ``grid``: as in :func:`warp_label`."""
    img = torch.as_tensor(np.asarray(image), dtype=torch.float32)
    low = img.amin(dim=tuple(range(1, img.ndim)), keepdim=True)
    warped = _resample(img - low, sampling_grid(params, img.shape[1:]) if grid is None else grid) + low
    return warped.numpy().astype(np.float32)


class RandPairGeometricd(RandomizableTransform, MapTransform):
    """With probability ``prob``, one random :class:`GeometricParams` (GenSeg's ranges, as
    :class:`~monai_siamese.masks.AugmentedMaskSource`) applied to a training pair: every image key bilinearly
    (outside the field: its minimum), every label key as :func:`warp_label` (one channel after another), all with the
    same grid, so image and mask stay registered.

    Few-shot generators see the N training masks only; the mask sources then ask them for geometric variants of
    those masks (augmented, interpolated). Training on pairs transformed by the very same family keeps that
    conditioning inside what the generator has seen.

    Args:
        keys: image keys, channel-first ``(C, *spatial)`` (a missing key is skipped: ``previous_image`` of 2.5D).
        label_keys: integer label keys, channel-first (``label``; ``label_context`` of 2.5D: every channel a mask).
        num_classes: classes including background.
        prob: probability of transforming an item.
        geometric_args: :func:`random_geometric_params` ranges (``rotate_degrees``, ``scale_range``,
            ``elastic_magnitude``...); defaults are GenSeg's, as in the augmented mask source.
    """

    def __init__(
        self,
        keys: KeysCollection = ("image",),
        label_keys: KeysCollection = ("label",),
        num_classes: int = 2,
        prob: float = 0.5,
        **geometric_args: Any,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys=True)
        RandomizableTransform.__init__(self, prob=prob)
        self.label_keys = list(ensure_tuple(label_keys))
        self.num_classes = int(num_classes)
        known = set(inspect.signature(random_geometric_params).parameters) - {"rng", "spatial_dims"}
        bad = sorted(set(geometric_args) - known)
        if bad:
            raise ValueError(f"RandPairGeometricd: unknown geometric arguments {bad}")
        self.geometric_args = dict(geometric_args)
        self._seed = 0

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)
        self._seed = int(self.R.randint(0, 2**31 - 1))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize()
        if not self._do_transform:
            return d
        lead = torch.as_tensor(d[self.label_keys[0]])
        params = random_geometric_params(np.random.default_rng(self._seed), lead.ndim - 1, **self.geometric_args)
        grids: dict[tuple, torch.Tensor] = {}  # one sampling grid per spatial shape, shared by every key

        def grid(shape: Sequence[int]) -> torch.Tensor:
            if tuple(shape) not in grids:
                grids[tuple(shape)] = sampling_grid(params, shape)
            return grids[tuple(shape)]

        for key in self.label_keys:
            if key not in d:
                continue
            lab = torch.as_tensor(d[key])
            g = grid(lab.shape[1:])
            warped = np.stack([warp_label(c.long().numpy(), params, self.num_classes, g) for c in lab])
            d[key] = torch.as_tensor(warped).to(lab.dtype)
        for key in self.key_iterator(d):
            img = torch.as_tensor(d[key])
            d[key] = torch.as_tensor(warp_image(img.float().numpy(), params, grid(img.shape[1:]))).to(img.dtype)
        return d
