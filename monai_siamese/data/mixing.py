"""Real + synthetic training data: synthetic datalists and a batch sampler that puts a fixed fraction of synthetic
items in every batch.

Synthetic pairs *replace* real slots of a batch; they do not add iterations. With ``batch_size`` 8 and
``synthetic_ratio`` 0.25 every batch holds 6 real and 2 synthetic slices, so a real-only run and a real +
synthetic run with the same iteration budget take the same number of optimizer steps on the same batch size.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from monai.transforms import Compose, Randomizable, apply_transform
from monai.utils import MAX_SEED

from monai_siamese.data.datalist import DatalistError, load_datalist
from monai_siamese.data.sampling import ResumableBatchSampler, reseed

__all__ = [
    "SYNTHETIC_KEY",
    "tag_entries",
    "load_synthetic_datalists",
    "synthetic_per_batch",
    "synthetic_phase_batches",
    "MixedBatchSampler",
    "SyntheticOnlyd",
]

#: entry key marking a synthetic pair (written by :class:`~monai_siamese.data.SyntheticPairWriter`)
SYNTHETIC_KEY = "synthetic"


def tag_entries(
    entries: Sequence[Mapping], synthetic: bool = False, keys: Sequence[str] = ("image", "label")
) -> list[dict]:
    """Keep only ``keys`` of every entry and add ``synthetic``.

    Real and synthetic entries then have the same keys, so they can share a batch (MONAI's collate needs equal
    keys); the provenance fields of synthetic entries (seed, source mask...) stay in their datalist.

    Args:
        entries: datalist entries.
        synthetic: value of the ``synthetic`` flag.
        keys: entry keys to keep.
    """
    return [{**{k: e[k] for k in keys if k in e}, SYNTHETIC_KEY: bool(synthetic)} for e in entries]


def load_synthetic_datalists(
    datalists: str | os.PathLike | Sequence[str | os.PathLike] | None,
    key: str = "training",
    require_flag: bool = False,
) -> list[dict]:
    """Entries of zero or more synthetic datalists (as the generator bundles write them), tagged synthetic.

    Args:
        datalists: one path, a list of paths, or None / empty (no synthetic data).
        key: split to read (the generators write ``training``).
        require_flag: raise when an entry is not marked ``"synthetic": true``.
    """
    if datalists is None or datalists == "":
        return []
    paths = [datalists] if isinstance(datalists, (str, os.PathLike)) else list(datalists)
    out: list[dict] = []
    for path in paths:
        entries = load_datalist(path, key)
        if require_flag:
            bad = [i for i, e in enumerate(entries) if not e.get(SYNTHETIC_KEY)]
            if bad:
                raise DatalistError(f"{path}: {len(bad)} entries of '{key}' are not marked synthetic (e.g. {bad[:3]})")
        out += tag_entries(entries, synthetic=True)
    return out


def synthetic_per_batch(batch_size: int, synthetic_ratio: float, num_synthetic: int = 1) -> int:
    """Synthetic slots per batch: ``round(batch_size * synthetic_ratio)``, 0 when there is no synthetic data.

    Args:
        batch_size: batch size.
        synthetic_ratio: fraction of every batch taken by synthetic items, in [0, 1].
        num_synthetic: number of synthetic items available.

    Raises:
        ValueError: ratio outside [0, 1], or a positive ratio that rounds to no slot at this batch size.
    """
    if not 0.0 <= float(synthetic_ratio) <= 1.0:
        raise ValueError(f"synthetic_ratio must be in [0, 1], got {synthetic_ratio}")
    if num_synthetic <= 0 or synthetic_ratio == 0:
        return 0
    n = int(round(batch_size * float(synthetic_ratio)))
    if n == 0:
        raise ValueError(
            f"synthetic_ratio {synthetic_ratio} x batch_size {batch_size} rounds to 0 synthetic items per batch; "
            "raise the ratio or the batch size"
        )
    return n


def synthetic_phase_batches(synthetic_until: float, num_iterations: int) -> int | None:
    """Batches of a run of ``num_iterations`` that hold synthetic items when they are limited to the first
    ``synthetic_until`` of the run (None for 1: every batch); see :class:`MixedBatchSampler`.

    Raises:
        ValueError: ``synthetic_until`` outside [0, 1].
    """
    if not 0.0 <= float(synthetic_until) <= 1.0:
        raise ValueError(f"synthetic_until must be in [0, 1] (a fraction of the run), got {synthetic_until}")
    if float(synthetic_until) == 1.0:
        return None
    return int(round(float(synthetic_until) * int(num_iterations)))


class MixedBatchSampler(ResumableBatchSampler):
    """Batches of ``(index, item_seed)`` into ``SeededDataset(ConcatDataset([real, synthetic]))`` with exactly
    ``round(batch_size * synthetic_ratio)`` synthetic items in every batch (indices ``>= num_real``).

    Each part is drawn from its own endless stream of reshuffled passes, so every real item is seen equally often
    whatever the ratio. With no synthetic items, or a ratio of 0, it is plain shuffled batching of the real items,
    so every arm of a comparison uses the same sampler and the same real batches. Batch ``b`` is a pure function of
    ``(seed, rank, b)``: a resumed run continues from :meth:`set_position` (see :class:`ResumableBatchSampler`).

    ``synthetic_batches`` limits the synthetic items to the first batches of the run (a synthetic phase): from batch
    ``synthetic_batches`` on, batches are real only, the real stream continuing where it was. Synthetic labels are
    less faithful than real ones; ending training on real data only keeps what the synthetic anatomy taught without
    fitting the last steps to their label errors (pre-train on synthetic, fine-tune on real, in one run). With
    ``synthetic_ratio`` doubled and half the run as the phase, the run sees as many synthetic items as with a fixed
    ratio.

    Args:
        num_real: number of real items (the first part of the concatenated dataset).
        num_synthetic: number of synthetic items (the second part).
        batch_size: items per batch.
        synthetic_ratio: fraction of every batch taken by synthetic items, in [0, 1].
        seed: seed of the streams.
        rank: process rank in distributed training (ranks draw different batches).
        synthetic_batches: number of batches, from the start of the run, that hold synthetic items (None: all).
    """

    def __init__(
        self,
        num_real: int,
        num_synthetic: int = 0,
        batch_size: int = 8,
        synthetic_ratio: float = 0.0,
        seed: int = 0,
        rank: int = 0,
        synthetic_batches: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        n_synthetic = synthetic_per_batch(batch_size, synthetic_ratio, num_synthetic)
        if batch_size - n_synthetic > 0 and num_real <= 0:
            raise ValueError("MixedBatchSampler: no real items but the batches need real slots")
        super().__init__([num_real, num_synthetic], [batch_size - n_synthetic, n_synthetic], seed=seed, rank=rank)
        self.num_real, self.num_synthetic = int(num_real), int(num_synthetic)
        self.n_real, self.n_synthetic = batch_size - n_synthetic, n_synthetic
        if synthetic_batches is not None and int(synthetic_batches) < 0:
            raise ValueError(f"synthetic_batches must be >= 0 or None, got {synthetic_batches}")
        if synthetic_batches is not None and n_synthetic and num_real <= 0:
            raise ValueError("MixedBatchSampler: no real items for the batches after the synthetic phase")
        self.synthetic_batches = None if synthetic_batches is None or not n_synthetic else int(synthetic_batches)

    def batch(self, b: int) -> list[tuple[int, int]]:
        """Batch number ``b``: ``n_real`` real and ``n_synthetic`` synthetic items in the synthetic phase, then
        ``batch_size`` real items (the real stream's positions continue across the switch)."""
        phase = self.synthetic_batches
        if phase is None or b < phase:
            return super().batch(b)
        start = phase * self.n_real + (b - phase) * self.batch_size
        return self.items(0, start, self.batch_size)


class SyntheticOnlyd(Randomizable):
    """Apply ``transform`` to synthetic items only (``item[key]`` true); real items pass through untouched.

    For augmentation that only the synthetic pairs need, e.g. photometric augmentation of generated images (GenSeg,
    Zhang et al., Nat. Commun. 2025, augments its synthetic images photometrically): their intensities are a
    generator's estimate, so the segmenter should not learn them exactly, while the real-only arm of a comparison keeps
    its own augmentation unchanged.

    Seeding (:class:`~monai_siamese.data.SeededDataset`): :meth:`set_random_state` only records the item's seed, and
    the inner transform is seeded from it when a synthetic item arrives, so a real item costs nothing. In a
    ``Compose`` the seeds of its members are drawn in order, so placed after the other random transforms this one
    leaves their draws, and so every real item, exactly as without it.

    Args:
        transform: a transform or a sequence of transforms (composed) for the synthetic items.
        key: the item key that marks a synthetic item.
    """

    def __init__(self, transform: Callable | Sequence[Callable], key: str = SYNTHETIC_KEY) -> None:
        self.transform = Compose(list(transform)) if isinstance(transform, Sequence) else transform
        self.key = key
        self._seed: int | None = None
        self._states: dict[int, np.random.RandomState] = {}

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> SyntheticOnlyd:
        """Record ``seed`` for the next item (or take ``state`` as this transform's generator)."""
        if state is not None:
            super().set_random_state(state=state)
        self._seed = None if seed is None else int(seed) % MAX_SEED
        return self

    def randomize(self, data: Any = None) -> int:
        """The seed of the inner transform: the recorded one, or a draw from this transform's own generator."""
        seed, self._seed = self._seed, None
        return int(self.R.randint(MAX_SEED, dtype="uint32")) if seed is None else seed

    def __call__(self, data: Mapping) -> Any:
        seed = self.randomize()
        if not data.get(self.key, False):
            return data
        if isinstance(self.transform, Randomizable):
            reseed(self.transform, seed, self._states)
        return apply_transform(self.transform, data)
