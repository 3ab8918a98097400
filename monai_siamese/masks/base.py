"""Shared parts of the mask sources: the source names, the regime's masks, one drawn mask with its provenance, the
per-mask seed, the plausibility checks and the base class with the retry loop."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar

import numpy as np
import torch
from scipy import ndimage

from monai_siamese.errors import InputError
from monai_siamese.transforms.mask_generator import MaskStatistics

__all__ = [
    "MaskSource",
    "MaskSourceError",
    "RegimeMask",
    "MaskSample",
    "BaseMaskSource",
    "mask_seed",
    "mask_problems",
    "reason_code",
    "regime_canvas",
    "border_contact",
    "foreground_components",
]


class MaskSource(str, Enum):
    """Kinds of conditioning masks, every one made from the regime's N real masks only."""

    REGIME = "regime"  # the N real masks themselves
    AUGMENTED = "augmented"  # random geometric + mild elastic transforms of them (GenSeg's ranges)
    GENERATED = "generated"  # the stochastic mask generator (hierarchical randomness, MaskStatistics)
    INTERPOLATED = "interpolated"  # shape interpolation between two of them (blended signed distances)


class MaskSourceError(InputError, RuntimeError):
    """A mask source cannot give a single usable mask for a regime (too few masks, or every try implausible).

    Args:
        source: the source's name (``augmented``, ``augmented:0.5,interpolated:0.5``...).
        regime: what the regime's masks came from (its datalist path).
        reason: why.
    """

    def __init__(self, source: str, regime: str, reason: str) -> None:
        self.source = source
        self.regime = regime
        self.reason = reason
        super().__init__(f"mask source {source!r} yields no usable mask for regime {regime}: {reason}")


@dataclass
class RegimeMask:
    """One of the regime's real masks, with its image and geometry.

    Args:
        label: integer class map ``(*spatial)`` (2D or 3D).
        image: the paired image ``(C, *spatial)`` in its source units (None: mask only).
        affine: 4x4 RAS affine of the mask.
        label_path: the file the mask came from.
        image_path: the file the image came from.
        slice_index: slice of the source volume (-1: a 2D file or a whole volume).
    """

    label: np.ndarray
    image: np.ndarray | None = None
    affine: np.ndarray = field(default_factory=lambda: np.eye(4))
    label_path: str = ""
    image_path: str = ""
    slice_index: int = -1

    def __post_init__(self) -> None:
        lab = np.asarray(self.label)
        if lab.ndim not in (2, 3):
            raise ValueError(f"{self.label_path or 'mask'}: expected a 2D or 3D label, got shape {lab.shape}")
        self.label = lab.astype(np.int64)
        if self.image is not None:
            img = np.asarray(self.image, dtype=np.float32)
            if img.ndim == lab.ndim:
                img = img[None]
            if img.shape[1:] != lab.shape:
                raise ValueError(
                    f"{self.image_path or 'image'}: shape {img.shape[1:]} differs from its label's {lab.shape}"
                )
            self.image = img

    @property
    def spatial_dims(self) -> int:
        return int(self.label.ndim)


@dataclass
class MaskSample:
    """One drawn mask with its provenance.

    Args:
        index: the mask's index in the run.
        kind: the source that made it.
        label: integer class map ``(*spatial)``.
        image: canvas image ``(C, *spatial)`` for generators that inpaint (None: the regime had no image).
        affine: 4x4 affine written with it (the first source mask's).
        sources: indices of the regime masks it came from.
        params: the random parameters (angles, lambda...), JSON-able.
        seed: the mask's own seed (:func:`mask_seed` of the run seed and ``index``).
        tries: draws made (1 = the first was plausible).
        accepted: whether a draw passed the checks (False: dropped; ``label`` is the last rejected draw).
        problems: why the last draw failed (empty when accepted).
        rejected: the reason codes (``cut_by_fov``...) of every rejected draw, in order.
    """

    index: int
    kind: str
    label: np.ndarray
    image: np.ndarray | None
    affine: np.ndarray
    sources: list[int]
    params: dict[str, Any]
    seed: int
    tries: int = 1
    accepted: bool = True
    problems: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)


def mask_seed(seed: int, index: int, stream: int = 0) -> int:
    """Seed of mask ``index`` of a run with ``seed`` (a pure function: reruns and longer runs reproduce mask
    ``index``); ``stream`` separates independent uses (e.g. a mixture's choice of source)."""
    state = np.random.SeedSequence([int(seed) % 2**63, int(index), int(stream)]).generate_state(1, np.uint64)
    return int(state[0] >> np.uint64(1))


def _np_label(label: np.ndarray | torch.Tensor) -> np.ndarray:
    arr = label.detach().cpu().numpy() if isinstance(label, torch.Tensor) else np.asarray(label)
    return arr.astype(np.int64)


def reason_code(problem: str) -> str:
    """The short code of a problem reported by :func:`mask_problems` (``cut_by_fov``...)."""
    return problem.split(":", 1)[0]


def border_contact(label: np.ndarray) -> int:
    """Foreground pixels (voxels) on the outer faces of the array: how much of the anatomy the field of view cuts."""
    fg = _np_label(label) > 0
    border = np.zeros(fg.shape, dtype=bool)
    for axis in range(fg.ndim):
        idx: list[Any] = [slice(None)] * fg.ndim
        idx[axis] = 0
        border[tuple(idx)] = True
        idx[axis] = -1
        border[tuple(idx)] = True
    return int((fg & border).sum())


def foreground_components(label: np.ndarray) -> int:
    """Connected components of the foreground (face connectivity)."""
    return int(ndimage.label(_np_label(label) > 0)[1])


def mask_problems(
    label: np.ndarray,
    references: Sequence[np.ndarray],
    num_classes: int,
    required_classes: Sequence[int] | None = None,
    border_tolerance: float = 0.25,
    component_tolerance: int = 0,
    statistics: MaskStatistics | None = None,
) -> list[str]:
    """Why a made mask is implausible against the mask(s) it came from (empty list: plausible).

    Each reason starts with a short code (``empty``, ``missing_class``, ``cut_by_fov``, ``islands``,
    ``statistics``) and a colon, so reasons can be counted by code.

    Args:
        label: the made mask ``(*spatial)``.
        references: the source mask(s) it was made from.
        num_classes: classes including background.
        required_classes: foreground classes that must be present (default: those present in every reference).
        border_tolerance: foreground on the array border may exceed the references' maximum by this fraction
            (a source that does not touch the border gives a mask that does not either).
        component_tolerance: foreground components allowed over the references' maximum (no islands).
        statistics: optional statistics of the regime's masks (area ratios, components, adjacency).
    """
    lab = _np_label(label)
    refs = [_np_label(r) for r in references]
    if not (lab > 0).any():
        return ["empty: no foreground"]
    out: list[str] = []
    if required_classes is None:
        present = [set(np.unique(r).tolist()) for r in refs]
        required_classes = sorted(set.intersection(*present) - {0}) if present else []
    counts = np.bincount(lab.ravel(), minlength=num_classes)
    missing = [int(c) for c in required_classes if counts[int(c)] == 0]
    if missing:
        out.append(f"missing_class: classes {missing} of the source are absent")
    ref_border = max(border_contact(r) for r in refs) if refs else 0
    border = border_contact(lab)
    if border > ref_border * (1 + border_tolerance):
        out.append(f"cut_by_fov: {border} foreground pixels on the border (source: {ref_border})")
    ref_comps = max(foreground_components(r) for r in refs) if refs else 1
    comps = foreground_components(lab)
    if comps > ref_comps + component_tolerance:
        out.append(f"islands: foreground has {comps} components (source: {ref_comps})")
    if statistics is not None:
        out.extend(f"statistics: {p}" for p in statistics.problems(lab))
    return out


class BaseMaskSource(ABC):
    """A source of conditioning masks: :meth:`fit` on the regime's masks, then :meth:`draw` mask ``index`` of a
    run with ``seed``; the draw depends only on ``(seed, index)``.

    Subclasses implement :meth:`propose` (one random candidate from a ``numpy`` generator) and may override
    :meth:`check`; the base class retries implausible candidates up to ``max_tries`` times.

    Args:
        num_classes: classes including background.
        max_tries: draws per mask before it is dropped.
    """

    kind: ClassVar[MaskSource]
    #: regime masks the source needs
    min_masks: ClassVar[int] = 1

    def __init__(self, num_classes: int, max_tries: int = 10) -> None:
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2 (background + classes), got {num_classes}")
        if max_tries < 1:
            raise ValueError(f"max_tries must be >= 1, got {max_tries}")
        self.num_classes = int(num_classes)
        self.max_tries = int(max_tries)
        self.regime: list[RegimeMask] = []
        self.regime_name = "<masks in memory>"

    @property
    def name(self) -> str:
        """The name of the source in errors and records."""
        return self.kind.value

    def fit(self, regime: Sequence[RegimeMask], regime_name: str | None = None) -> BaseMaskSource:
        """Use ``regime`` (the N real masks); raise :class:`MaskSourceError` when there are too few."""
        self.regime = list(regime)
        if regime_name is not None:
            self.regime_name = str(regime_name)
        if len(self.regime) < self.min_masks:
            raise MaskSourceError(
                self.name,
                self.regime_name,
                f"needs at least {self.min_masks} regime mask(s), the regime has {len(self.regime)}",
            )
        for m in self.regime:
            if int(m.label.max()) >= self.num_classes or int(m.label.min()) < 0:
                raise ValueError(
                    f"{m.label_path or 'regime mask'}: class values {np.unique(m.label).tolist()} outside "
                    f"0..{self.num_classes - 1}"
                )
        self._fit()
        return self

    def _fit(self) -> None:
        """Learn from ``self.regime`` (statistics...)."""

    def _check_fitted(self) -> None:
        if not self.regime:
            raise RuntimeError(f"mask source {self.name!r}: call fit() with the regime's masks first")

    @abstractmethod
    def propose(self, index: int, rng: np.random.Generator) -> MaskSample:
        """One candidate for mask ``index`` (``seed`` and ``tries`` are filled in by :meth:`draw`)."""

    def check(self, sample: MaskSample) -> list[str]:
        """Plausibility problems of a candidate (see :func:`mask_problems`)."""
        return mask_problems(sample.label, [self.regime[i].label for i in sample.sources], self.num_classes)

    def draw(self, index: int, seed: int = 0) -> MaskSample:
        """Mask ``index`` of a run with ``seed``: the first plausible of up to ``max_tries`` candidates, or the last
        candidate with ``accepted=False`` (dropped)."""
        self._check_fitted()
        s = mask_seed(seed, index)
        rng = np.random.default_rng(s)
        sample: MaskSample | None = None
        problems: list[str] = []
        rejected: list[str] = []
        for t in range(self.max_tries):
            sample = self.propose(index, rng)
            problems = self.check(sample)
            if not problems:
                break
            rejected.append(reason_code(problems[0]))
        assert sample is not None
        sample.index, sample.seed, sample.tries = int(index), s, t + 1
        sample.accepted, sample.problems, sample.rejected = not problems, problems, rejected
        return sample

    def sample(self, num_masks: int, seed: int = 0) -> list[MaskSample]:
        """Masks ``0 .. num_masks - 1`` of a run with ``seed`` (dropped ones included, ``accepted=False``)."""
        return [self.draw(i, seed) for i in range(int(num_masks))]


def regime_canvas(mask: RegimeMask) -> np.ndarray | None:
    """A copy of a regime mask's image (the canvas of a mask that keeps its source's geometry)."""
    return None if mask.image is None else mask.image.copy()
