"""The mask sources: the regime's masks, augmented masks (GenSeg), generated masks (MedDiff-FT's stochastic mask
generator), interpolated masks, and weighted mixtures of them.

Augmented masks follow GenSeg (Zhang et al., "Generative AI enables medical image segmentation in ultra low-data
regimes", Nat. Commun. 2025), which conditions its generator on geometrically augmented masks: flip, crop/pad
0-10 %, scale 0.8-1.2, translate +-10 %, rotate +-15 degrees, shear +-8 degrees (the defaults here), plus a mild
elastic deformation of ours.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from monai_siamese.masks.base import (
    BaseMaskSource,
    MaskSample,
    MaskSource,
    MaskSourceError,
    RegimeMask,
    mask_problems,
    mask_seed,
    regime_canvas,
)
from monai_siamese.masks.interpolation import AlignMode, PairingMode, interpolate_labels
from monai_siamese.transforms.geometry import random_geometric_params, sampling_grid, warp_image, warp_label
from monai_siamese.transforms.mask_generator import MaskStatistics, StochasticMaskGenerator

__all__ = [
    "RegimeMaskSource",
    "AugmentedMaskSource",
    "GeneratedMaskSource",
    "InterpolatedMaskSource",
    "MixedMaskSource",
    "SOURCE_CLASSES",
    "parse_mask_source",
    "build_mask_source",
]


class RegimeMaskSource(BaseMaskSource):
    """The regime's N real masks themselves, in turn (mask ``i`` is regime mask ``i mod N``): today's behaviour.

    Args:
        num_classes: classes including background.
        max_tries: unused (the real masks are always accepted); kept for a uniform signature.
    """

    kind = MaskSource.REGIME

    def propose(self, index: int, rng: np.random.Generator) -> MaskSample:
        k = index % len(self.regime)
        m = self.regime[k]
        return MaskSample(index, self.kind.value, m.label.copy(), regime_canvas(m), m.affine, [k], {}, 0)

    def check(self, sample: MaskSample) -> list[str]:
        return []


class _CheckedSourceMixin:
    """The plausibility checks of the sources that make new masks: :func:`~monai_siamese.masks.mask_problems`
    against the candidate's source masks, with optional :class:`MaskStatistics` learnt from the regime's masks (and
    nothing else)."""

    num_classes: int
    regime: list[RegimeMask]
    border_tolerance: float
    component_tolerance: int
    use_statistics: bool
    area_tolerance: float
    statistics: MaskStatistics | None = None

    def _set_checks(
        self, border_tolerance: float, component_tolerance: int, use_statistics: bool, area_tolerance: float
    ) -> None:
        self.border_tolerance = border_tolerance
        self.component_tolerance = component_tolerance
        self.use_statistics = use_statistics
        self.area_tolerance = area_tolerance

    def _fit(self) -> None:
        """Learn the regime's :class:`MaskStatistics` (``use_statistics``)."""
        self.statistics = None
        if self.use_statistics:
            self.statistics = MaskStatistics.from_masks(
                [m.label for m in self.regime], self.num_classes, area_tolerance=self.area_tolerance
            )

    def check(self, sample: MaskSample) -> list[str]:
        return mask_problems(
            sample.label,
            [self.regime[k].label for k in sample.sources],
            self.num_classes,
            border_tolerance=self.border_tolerance,
            component_tolerance=self.component_tolerance,
            statistics=self.statistics,
        )


class AugmentedMaskSource(_CheckedSourceMixin, BaseMaskSource):
    """Random geometric + mild elastic transforms of the regime's masks (GenSeg's ranges as defaults).

    Mask ``i`` transforms regime mask ``i mod N``; the label is warped as a one-hot and arg-maxed, the canvas image
    with the same transform, so the anatomy outside the mask stays coherent. A candidate is rejected when a class of
    its source is missing, it is empty, the field of view cuts more of it than of the source, it has more foreground
    components than the source, or (``use_statistics``) it fails the regime's :class:`MaskStatistics`. Works on 2D and
    3D masks (3D: three rotation angles, six shears).

    Args:
        num_classes: classes including background.
        flip_prob: probability of mirroring each axis in ``flip_axes``.
        flip_axes: axes that may be mirrored (``(0,)``: left-right of RAS axial slices).
        crop_pad_fraction: each side cropped or padded by up to this fraction, then resized back.
        scale_range: apparent size factor range.
        rotate_degrees: maximum rotation (each axis in 3D).
        shear_degrees: maximum shear angle.
        translate_fraction: maximum shift per axis, fraction of the size.
        elastic_magnitude: elastic displacement std, fraction of the smallest size (0: off).
        elastic_points: control points per axis of the elastic field.
        border_tolerance: see :func:`~monai_siamese.masks.mask_problems`.
        component_tolerance: see :func:`~monai_siamese.masks.mask_problems`.
        use_statistics: also check :class:`MaskStatistics` of the regime's masks.
        area_tolerance: their area-ratio tolerance.
        max_tries: candidates per mask before it is dropped.
    """

    kind = MaskSource.AUGMENTED

    def __init__(
        self,
        num_classes: int,
        flip_prob: float = 0.5,
        flip_axes: Sequence[int] = (0,),
        crop_pad_fraction: float = 0.1,
        scale_range: Sequence[float] = (0.8, 1.2),
        rotate_degrees: float = 15.0,
        shear_degrees: float = 8.0,
        translate_fraction: float = 0.1,
        elastic_magnitude: float = 0.015,
        elastic_points: int = 5,
        border_tolerance: float = 0.25,
        component_tolerance: int = 0,
        use_statistics: bool = False,
        area_tolerance: float = 0.25,
        max_tries: int = 10,
    ) -> None:
        super().__init__(num_classes, max_tries)
        if not 0 <= crop_pad_fraction < 0.5:
            raise ValueError(f"crop_pad_fraction must be in [0, 0.5), got {crop_pad_fraction}")
        if len(scale_range) != 2 or not 0 < scale_range[0] <= scale_range[1]:
            raise ValueError(f"scale_range must be (low, high) with 0 < low <= high, got {scale_range}")
        self.transform_args: dict[str, Any] = dict(
            flip_prob=float(flip_prob),
            flip_axes=tuple(int(a) for a in flip_axes),
            crop_pad_fraction=float(crop_pad_fraction),
            scale_range=(float(scale_range[0]), float(scale_range[1])),
            rotate_degrees=float(rotate_degrees),
            shear_degrees=float(shear_degrees),
            translate_fraction=float(translate_fraction),
            elastic_magnitude=float(elastic_magnitude),
            elastic_points=int(elastic_points),
        )
        self._set_checks(border_tolerance, component_tolerance, use_statistics, area_tolerance)

    def propose(self, index: int, rng: np.random.Generator) -> MaskSample:
        k = index % len(self.regime)
        m = self.regime[k]
        params = random_geometric_params(rng, m.spatial_dims, **self.transform_args)
        grid = sampling_grid(params, np.shape(m.label))  # one grid for the mask and its canvas (same shape)
        label = warp_label(m.label, params, self.num_classes, grid)
        image = None if m.image is None else warp_image(m.image, params, grid)
        return MaskSample(index, self.kind.value, label, image, m.affine, [k], params.to_dict(), 0)


class GeneratedMaskSource(_CheckedSourceMixin, BaseMaskSource):
    """MedDiff-FT's stochastic mask generator (:class:`~monai_siamese.transforms.StochasticMaskGenerator`: global,
    regional and boundary randomness) on the regime's masks, checked against :class:`MaskStatistics` learnt from
    the same N masks, and by the checks of :class:`AugmentedMaskSource`.

    Mask ``i`` starts from regime mask ``i mod N``. The generator's transform is internal, so the canvas is the
    source's image unchanged (MedDiff-FT inpaints the new mask into it, over the union of both foregrounds).

    Args:
        num_classes: classes including background.
        use_statistics: check the regime's :class:`MaskStatistics` (the generator's design; on by default).
        area_tolerance: their area-ratio tolerance.
        border_tolerance: see :func:`~monai_siamese.masks.mask_problems`.
        component_tolerance: see :func:`~monai_siamese.masks.mask_problems`.
        max_tries: candidates per mask before it is dropped.
        generator_kwargs: further :class:`StochasticMaskGenerator` arguments (``rotate_range``, ``flip_axes``...);
            ``spatial_dims`` is taken from each mask.
    """

    kind = MaskSource.GENERATED

    def __init__(
        self,
        num_classes: int,
        use_statistics: bool = True,
        area_tolerance: float = 0.25,
        border_tolerance: float = 0.25,
        component_tolerance: int = 0,
        max_tries: int = 10,
        **generator_kwargs: Any,
    ) -> None:
        super().__init__(num_classes, max_tries)
        bad = sorted(set(generator_kwargs) & {"num_classes", "spatial_dims", "statistics", "max_tries"})
        if bad:
            raise ValueError(f"GeneratedMaskSource sets {bad} itself")
        self._set_checks(border_tolerance, component_tolerance, use_statistics, area_tolerance)
        self.generator_kwargs = dict(generator_kwargs)
        self._generators: dict[int, StochasticMaskGenerator] = {}

    def _generator(self, spatial_dims: int) -> StochasticMaskGenerator:
        if spatial_dims not in self._generators:
            self._generators[spatial_dims] = StochasticMaskGenerator(
                self.num_classes, spatial_dims=spatial_dims, statistics=None, max_tries=1, **self.generator_kwargs
            )
        return self._generators[spatial_dims]

    def propose(self, index: int, rng: np.random.Generator) -> MaskSample:
        k = index % len(self.regime)
        m = self.regime[k]
        gen = self._generator(m.spatial_dims)
        gseed = int(rng.integers(0, 2**32 - 1))
        gen.set_random_state(seed=gseed)
        out = gen.generate_once(torch.as_tensor(m.label)[None])
        label = out[0].numpy().astype(np.int64)
        params = {"generator_seed": gseed, **{k2: _jsonable(v) for k2, v in self.generator_kwargs.items()}}
        return MaskSample(index, self.kind.value, label, regime_canvas(m), m.affine, [k], params, 0)


def _jsonable(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    return v


class InterpolatedMaskSource(_CheckedSourceMixin, BaseMaskSource):
    """Shape interpolation between two regime masks: the anatomy between annotated slices.

    Each mask blends the per-class signed distances of a pair of regime masks (random pairs, or neighbours in the
    regime's order) at a random weight ``lam`` (:func:`~monai_siamese.masks.interpolate_labels`); the pair must have
    the same shape. A candidate is rejected when a class present in both sources is missing, it is empty, the field
    of view cuts more of it than of either source, it has more foreground components than either source, or
    (``use_statistics``) it fails the regime's :class:`MaskStatistics`. The canvas image is the first source's.

    Args:
        num_classes: classes including background.
        lambda_range: range of the weight of the second mask.
        pairing: ``random`` or ``adjacent`` (see :class:`PairingMode`).
        align: ``none`` (default: slices of one scanner share a grid), ``centroid`` or ``rigid``.
        smooth_sigma: Gaussian smoothing of the blended distances, pixels (0: none).
        min_component_size: smaller components where neither source has their class go to their next-nearest class.
        border_tolerance: see :func:`~monai_siamese.masks.mask_problems`.
        component_tolerance: see :func:`~monai_siamese.masks.mask_problems`.
        use_statistics: also check :class:`MaskStatistics` of the regime's masks.
        area_tolerance: their area-ratio tolerance.
        max_tries: candidates (new pair, new weight) per mask before it is dropped.
    """

    kind = MaskSource.INTERPOLATED
    min_masks = 2

    def __init__(
        self,
        num_classes: int,
        lambda_range: Sequence[float] = (0.2, 0.8),
        pairing: PairingMode | str = PairingMode.RANDOM,
        align: AlignMode | str = AlignMode.NONE,
        smooth_sigma: float = 0.0,
        min_component_size: int = 4,
        border_tolerance: float = 0.25,
        component_tolerance: int = 0,
        use_statistics: bool = False,
        area_tolerance: float = 0.25,
        max_tries: int = 10,
    ) -> None:
        super().__init__(num_classes, max_tries)
        if len(lambda_range) != 2 or not 0.0 <= lambda_range[0] <= lambda_range[1] <= 1.0:
            raise ValueError(f"lambda_range must be (low, high) within [0, 1], got {lambda_range}")
        self.lambda_range = (float(lambda_range[0]), float(lambda_range[1]))
        self.pairing = PairingMode(pairing)
        self.align = AlignMode(align)
        self.smooth_sigma = float(smooth_sigma)
        self.min_component_size = int(min_component_size)
        self._set_checks(border_tolerance, component_tolerance, use_statistics, area_tolerance)
        self._pairs: list[tuple[int, int]] = []

    def _fit(self) -> None:
        super()._fit()
        n = len(self.regime)
        if self.pairing == PairingMode.ADJACENT:
            order = sorted(range(n), key=lambda i: (self.regime[i].slice_index, i))
            cand = [(order[j], order[j + 1]) for j in range(n - 1)]
        else:
            cand = [(i, j) for i in range(n) for j in range(i + 1, n)]
        self._pairs = [(i, j) for i, j in cand if self.regime[i].label.shape == self.regime[j].label.shape]
        if not self._pairs:
            raise MaskSourceError(
                self.name, self.regime_name, f"no two of the {n} regime masks have the same shape to interpolate"
            )

    def propose(self, index: int, rng: np.random.Generator) -> MaskSample:
        i, j = self._pairs[int(rng.integers(len(self._pairs)))]
        if rng.random() < 0.5:  # either mask may be the first (the canvas and geometry)
            i, j = j, i
        lam = float(rng.uniform(*self.lambda_range))
        a, b = self.regime[i], self.regime[j]
        label, info = interpolate_labels(
            a.label, b.label, lam, self.num_classes, self.align, self.smooth_sigma, self.min_component_size
        )
        params = {"lambda": lam, "align": self.align.value, **info}
        return MaskSample(index, self.kind.value, label, regime_canvas(a), a.affine, [i, j], params, 0)


#: the class of each single source
SOURCE_CLASSES: dict[MaskSource, type[BaseMaskSource]] = {
    MaskSource.REGIME: RegimeMaskSource,
    MaskSource.AUGMENTED: AugmentedMaskSource,
    MaskSource.GENERATED: GeneratedMaskSource,
    MaskSource.INTERPOLATED: InterpolatedMaskSource,
}


def _kind(name: str | MaskSource) -> MaskSource:
    try:
        return MaskSource(str(name.value if isinstance(name, MaskSource) else name).strip().lower())
    except ValueError:
        known = ", ".join(m.value for m in MaskSource)
        raise ValueError(
            f"unknown mask source {str(name)!r} (known: {known}; mixtures as 'augmented:0.5,interpolated:0.5')"
        ) from None


def _weight(kind: str, value: Any) -> float:
    try:
        w = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"mask source weight of {kind!r} must be a number, got {value!r}") from None
    if not np.isfinite(w) or w < 0:
        raise ValueError(f"mask source weight of {kind!r} must be finite and >= 0, got {value!r}")
    return w


def parse_mask_source(spec: str | MaskSource | Mapping[str, float]) -> dict[MaskSource, float]:
    """Normalised weights of a source spec: a name (``augmented``), a mixture string
    (``"augmented:0.5,interpolated:0.5"``; a name without weight counts 1) or a ``{name: weight}`` mapping.

    Raises:
        ValueError: unknown names, repeated names, negative / non-numeric weights, or weights summing to 0.
    """
    if isinstance(spec, Mapping):
        items = [(str(k), v) for k, v in spec.items()]
    else:
        text = spec.value if isinstance(spec, MaskSource) else str(spec)
        if not text.strip():
            raise ValueError("empty mask source")
        items = []
        for part in text.split(","):
            name, sep, w = part.partition(":")
            if not name.strip():
                raise ValueError(f"mask source {text!r}: empty name in {part!r}")
            items.append((name, w if sep else 1.0))
    weights: dict[MaskSource, float] = {}
    for name, w in items:
        kind = _kind(name)
        if kind in weights:
            raise ValueError(f"mask source {kind.value!r} appears twice in {spec!r}")
        weights[kind] = _weight(kind.value, w)
    total = sum(weights.values())
    if total <= 0:
        raise ValueError(f"mask source weights of {spec!r} sum to 0")
    return {k: w / total for k, w in weights.items() if w > 0}


def _spec_name(weights: Mapping[MaskSource, float]) -> str:
    if len(weights) == 1:
        return next(iter(weights)).value
    return ",".join(f"{k.value}:{w:g}" for k, w in weights.items())


class MixedMaskSource(BaseMaskSource):
    """Each mask drawn from one of several sources with given probabilities: mask ``i`` picks its source from
    ``(seed, i)`` alone, then is exactly what that source alone gives as mask ``i``.

    Args:
        num_classes: classes including background.
        weights: ``{source name: weight}`` (normalised), or a mixture string (see :func:`parse_mask_source`).
        options: per source name, constructor arguments of its class (``{"augmented": {"rotate_degrees": 10}}``).
        max_tries: default ``max_tries`` of the sources that do not set it in ``options``.
    """

    def __init__(
        self,
        num_classes: int,
        weights: Mapping[str, float] | str,
        options: Mapping[str, Mapping[str, Any]] | None = None,
        max_tries: int = 10,
    ) -> None:
        super().__init__(num_classes, max_tries)
        self.weights = parse_mask_source(weights)
        options = dict(options or {})
        unknown = sorted(set(options) - {k.value for k in MaskSource})
        if unknown:
            raise ValueError(f"options given for unknown mask source(s) {unknown}")
        self.sources: dict[MaskSource, BaseMaskSource] = {}
        for kind in self.weights:
            kw = {"max_tries": max_tries, **dict(options.get(kind.value, {}))}
            self.sources[kind] = SOURCE_CLASSES[kind](num_classes=num_classes, **kw)
        self._kinds = list(self.weights)
        self._cum = np.cumsum([self.weights[k] for k in self._kinds])

    @property
    def name(self) -> str:
        return _spec_name(self.weights)

    @property
    def min_masks(self) -> int:  # type: ignore[override]
        return max(type(s).min_masks for s in self.sources.values())

    def fit(self, regime: Sequence[RegimeMask], regime_name: str | None = None) -> MixedMaskSource:
        if regime_name is not None:
            self.regime_name = str(regime_name)
        self.regime = list(regime)
        for kind, src in self.sources.items():
            try:
                src.fit(regime, self.regime_name)
            except MaskSourceError as e:
                raise MaskSourceError(self.name, self.regime_name, f"{kind.value}: {e.reason}") from e
        return self

    def choose(self, index: int, seed: int = 0) -> MaskSource:
        """The source of mask ``index`` (from ``(seed, index)`` alone)."""
        u = np.random.default_rng(mask_seed(seed, index, stream=1)).random()
        return self._kinds[min(int(np.searchsorted(self._cum, u * self._cum[-1], side="right")), len(self._kinds) - 1)]

    def propose(self, index: int, rng: np.random.Generator) -> MaskSample:  # pragma: no cover - draw() delegates
        raise NotImplementedError

    def draw(self, index: int, seed: int = 0) -> MaskSample:
        self._check_fitted()
        return self.sources[self.choose(index, seed)].draw(index, seed)


def build_mask_source(
    spec: str | MaskSource | Mapping[str, float] | BaseMaskSource,
    num_classes: int,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    max_tries: int = 10,
) -> BaseMaskSource:
    """A mask source from a name, a mixture (string or ``{name: weight}``) or an already built source.

    Args:
        spec: ``regime``, ``augmented``, ``generated``, ``interpolated``, ``"augmented:0.5,interpolated:0.5"``,
            ``{"augmented": 0.5, "interpolated": 0.5}``, or a :class:`BaseMaskSource` (returned as is).
        num_classes: classes including background.
        options: per source name, constructor arguments (``{"augmented": {"rotate_degrees": 10}}``).
        max_tries: candidates per mask before it is dropped (unless set in ``options``).
    """
    if isinstance(spec, BaseMaskSource):
        return spec
    weights = parse_mask_source(spec)
    if len(weights) == 1:
        (kind,) = weights
        unknown = sorted(set(options or {}) - {k.value for k in MaskSource})
        if unknown:
            raise ValueError(f"options given for unknown mask source(s) {unknown}")
        kw = {"max_tries": max_tries, **dict((options or {}).get(kind.value, {}))}
        return SOURCE_CLASSES[kind](num_classes=num_classes, **kw)
    return MixedMaskSource(num_classes, {k.value: w for k, w in weights.items()}, options, max_tries)
