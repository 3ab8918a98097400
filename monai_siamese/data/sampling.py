"""Resumable, per-item seeded training data: a batch sampler whose batch ``b`` is a pure function of (seed, rank, b),
and a dataset wrapper that applies the random transforms of an item with that item's own seed.

Together they make the data side of training exactly resumable: a run killed after iteration ``i`` and resumed from
its checkpoint (``set_position(i)``) sees the same batches, with the same augmentations, as a run that was never
interrupted, whatever the number of data-loader workers (MONAI's ``Randomizable`` transforms keep their random state
inside each worker, which no checkpoint can restore; seeding each item makes that state irrelevant).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.transforms import Compose, Randomizable, apply_transform
from monai.transforms.traits import LazyTrait
from monai.utils import MAX_SEED
from torch.utils.data import Dataset, Sampler

__all__ = ["ResumableBatchSampler", "SeededDataset", "direct_chain", "item_seed", "reseed"]


def item_seed(seed: int, part: int, position: int) -> int:
    """Seed of the item at ``position`` of stream ``part`` of a run seeded with ``seed`` (a pure function)."""
    return int(np.random.SeedSequence([int(seed) % MAX_SEED, int(part), int(position)]).generate_state(1)[0])


class ResumableBatchSampler(Sampler[list[tuple[int, int]]]):
    """An endless stream of batches of ``(index, item_seed)`` pairs for ``dataset[(index, item_seed)]`` (see
    :class:`SeededDataset`), with ``per_batch[k]`` items of part ``k`` in every batch.

    Each part ``k`` (``sizes[k]`` items, indices offset by the sizes before it, as in a ``ConcatDataset``) is an
    endless stream of passes; pass ``p`` is a permutation of the part drawn from ``(seed, rank, k, p)`` (or the
    identity without ``shuffle``), so every item of a part is seen equally often and batch ``b`` depends only on
    ``(seed, rank, b)``. The stream starts at batch :attr:`position` (0, or where a resumed run left off:
    :meth:`set_position`); iterate it with an ``epoch_length`` (ignite keeps the iterator across epochs).

    With one part this is plain shuffled batching; with a real and a synthetic part it puts a fixed number of
    synthetic items in every batch (see :func:`~monai_siamese.data.synthetic_per_batch`).

    Args:
        sizes: items per part.
        per_batch: items per batch from each part (same length as ``sizes``; 0 skips a part).
        seed: seed of the permutations and item seeds.
        shuffle: permute each pass (False: in order).
        rank: process rank in distributed training (ranks draw different batches).
    """

    def __init__(
        self,
        sizes: Sequence[int],
        per_batch: Sequence[int],
        seed: int = 0,
        shuffle: bool = True,
        rank: int = 0,
    ) -> None:
        if len(sizes) != len(per_batch):
            raise ValueError(f"sizes {list(sizes)} and per_batch {list(per_batch)} differ in length")
        for n, k in zip(sizes, per_batch):
            if k < 0 or (k > 0 and n <= 0):
                raise ValueError(f"a part of {n} items cannot fill {k} slots of every batch")
        if sum(per_batch) < 1:
            raise ValueError("batches would be empty: per_batch sums to 0")
        self.sizes = [int(n) for n in sizes]
        self.per_batch = [int(k) for k in per_batch]
        self.offsets = [int(sum(self.sizes[:i])) for i in range(len(self.sizes))]
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self.rank = int(rank)
        self.position = 0
        self._perms: dict[tuple[int, int], list[int]] = {}

    @property
    def batch_size(self) -> int:
        return sum(self.per_batch)

    def __len__(self) -> int:
        """Batches per pass over the first part that has slots (the real items: what one epoch would be)."""
        n, k = next((n, k) for n, k in zip(self.sizes, self.per_batch) if k > 0)
        return math.ceil(n / k)

    def set_position(self, position: int) -> None:
        """Start the next iteration at batch ``position`` (the number of batches a resumed run already used)."""
        self.position = int(position)

    def _perm(self, part: int, pass_: int) -> list[int]:
        key = (part, pass_)
        if key not in self._perms:
            n = self.sizes[part]
            if self.shuffle:
                gen = torch.Generator().manual_seed(item_seed(self.seed * 7919 + self.rank, 1_000 + part, pass_))
                perm = torch.randperm(n, generator=gen).tolist()
            else:
                perm = list(range(n))
            if len(self._perms) > 64:
                self._perms.clear()
            self._perms[key] = perm
        return self._perms[key]

    def items(self, part: int, start: int, count: int) -> list[tuple[int, int]]:
        """Items ``start .. start + count - 1`` of part ``part``'s endless stream, as ``(index, item_seed)``."""
        n, out = self.sizes[part], []
        for j in range(start, start + count):
            pos = self._perm(part, j // n)[j % n]
            out.append((self.offsets[part] + pos, item_seed(self.seed * 7919 + self.rank, part, j)))
        return out

    def batch(self, b: int) -> list[tuple[int, int]]:
        """Batch number ``b`` of the stream."""
        out = []
        for part, k in enumerate(self.per_batch):
            out += self.items(part, b * k, k)
        return out

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        b = self.position
        while True:
            yield self.batch(b)
            b += 1


def _own_state(obj: Randomizable, seed: int, owned: dict[int, np.random.RandomState]) -> np.random.RandomState:
    """Set ``obj.R`` to the state of ``np.random.RandomState(seed)``, re-seeding in place the generator this function
    gave ``obj`` last time (``RandomState.seed`` resets the same state as a new ``RandomState(seed)``, in ~1% of the
    time), and creating one otherwise (never seeding a generator someone else may hold, such as the class default)."""
    seed = int(np.int64(seed) % MAX_SEED)  # what Randomizable.set_random_state does with an integer
    state = owned.get(id(obj))
    if state is not None and obj.__dict__.get("R") is state:
        state.seed(seed)
    else:
        state = np.random.RandomState(seed)
        obj.R = state
        owned[id(obj)] = state
    return state


#: MONAI transforms whose ``set_random_state`` seeds the object itself and these members with the same seed (and
#: nothing else); :func:`reseed` does the same without constructing generators (checked against MONAI's own call,
#: state by state and output by output, in ``tests/data/test_sampling.py``)
SAME_SEED_MEMBERS: dict[str, tuple[str, ...]] = {
    "RandFlipd": (),
    "RandAxisFlipd": ("flipper",),
    "RandAffined": ("rand_affine",),
    "RandAffine": ("rand_affine_grid",),
    "RandRotated": ("rand_rotate",),
    "RandZoomd": ("rand_zoom",),
    "Rand2DElasticd": ("rand_2d_elastic",),
    "Rand2DElastic": ("deform_grid", "rand_affine_grid"),
    "RandGaussianNoised": ("rand_gaussian_noise",),
    "RandAdjustContrastd": ("adjuster",),
    "RandGaussianSmoothd": ("rand_smooth",),
    "RandScaleIntensityd": ("scaler",),
    "RandShiftIntensityd": ("shifter",),
    "RandBiasFieldd": ("rand_bias_field",),
}


def _same_seed_members(cls: type) -> tuple[str, ...] | None:
    """The members :data:`SAME_SEED_MEMBERS` lists for exactly this MONAI class (None for any other class,
    subclasses included: their ``set_random_state`` may do more)."""
    if not cls.__module__.startswith("monai.transforms.") or "set_random_state" not in cls.__dict__:
        return None
    return SAME_SEED_MEMBERS.get(cls.__name__)


def reseed(transform: Randomizable, seed: int, owned: dict[int, np.random.RandomState] | None = None) -> None:
    """``transform.set_random_state(seed=seed)`` with the same resulting random states, but reusing the generators of
    the previous call (``owned``, kept by the caller) instead of constructing a ``np.random.RandomState`` per transform
    per call (~0.2 ms each: the largest share of per-item data cost on small images).

    Plain ``Randomizable`` objects, ``Compose`` (which seeds each random member with a draw from its own state, in
    order) and MONAI's random transforms that seed their inner transforms with the same seed
    (:data:`SAME_SEED_MEMBERS`: flips, affine, intensity) are handled here; any other class that overrides
    ``set_random_state`` is called as it is.

    Args:
        transform: the transform (tree) to seed.
        seed: the seed.
        owned: ``id(object) -> RandomState`` this function created (pass the same dict on every call).
    """
    owned = {} if owned is None else owned
    impl = type(transform).set_random_state
    if impl is Randomizable.set_random_state:
        _own_state(transform, seed, owned)
    elif impl is Compose.set_random_state:
        state = _own_state(transform, seed, owned)
        for member in transform.transforms:
            if isinstance(member, Randomizable):
                reseed(member, int(state.randint(MAX_SEED, dtype="uint32")), owned)
    elif (members := _same_seed_members(type(transform))) is not None:
        _own_state(transform, seed, owned)
        for name in members:
            reseed(getattr(transform, name), seed, owned)
    else:
        transform.set_random_state(seed=seed)


def direct_chain(transform: Any) -> list[Callable] | None:
    """The leaf transforms of ``transform`` in the order MONAI's ``Compose`` applies them, when calling them one by one
    on a dict item is exactly what ``Compose`` does: plain ``Compose`` nesting only (not ``OneOf``, ``RandomOrder``,
    ``SomeOf``), nothing lazy-capable (no pending resampling to apply between steps), no unpacking or logging.
    None for any other tree, which then keeps ``apply_transform``."""
    if type(transform) is Compose:
        if transform.unpack_items or transform.log_stats or transform.lazy:
            return None
        out: list[Callable] = []
        for member in transform.transforms:
            sub = direct_chain(member)
            if sub is None:
                return None
            out += sub
        return out
    if isinstance(transform, (Compose, LazyTrait)) or not callable(transform):
        return None
    return [transform]


class SeededDataset(Dataset):
    """``dataset`` with a random ``transform`` applied per item with the item's own seed: ``self[(index, seed)]``
    re-seeds every ``Randomizable`` in ``transform`` from ``seed`` and applies it to ``dataset[index]`` (a plain
    integer index applies the transform with its current random state).

    Args:
        dataset: the deterministic items (e.g. a :class:`~monai_siamese.data.SliceDataset` without ``transform``,
            or a ``ConcatDataset`` of real and synthetic ones).
        transform: the random per-access transform (augmentation, mask ablation, condition dropout).
    """

    def __init__(self, dataset: Sequence | Dataset, transform: Callable | None = None) -> None:
        self.dataset = dataset
        self.transform = transform
        self._states: dict[int, np.random.RandomState] = {}  # generators reused by :func:`reseed`
        self._chain: list[Callable] | None = None
        self._chain_of: Any = None

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: int | tuple[int, int]) -> Any:
        index, seed = key if isinstance(key, (tuple, list)) else (key, None)
        item = self.dataset[int(index)]
        if self.transform is None:
            return item
        if seed is not None and isinstance(self.transform, Randomizable):
            reseed(self.transform, int(seed) % MAX_SEED, self._states)
        if seed is None or not isinstance(item, Mapping):
            return apply_transform(self.transform, item)
        if self._chain_of is not self.transform:
            self._chain, self._chain_of = direct_chain(self.transform), self.transform
        if self._chain is None:
            return apply_transform(self.transform, item)
        # the transforms called directly (MONAI's per-transform dispatch costs as much as mask encoding and ablation
        # together on a small item); anything unusual is replayed from the same seed through MONAI's own path: a
        # transform that returns several items (its map_items applies the rest to each) or one that raises (its
        # error message names the transform)
        data = item
        try:
            for t in self._chain:
                data = t(data)
                if not isinstance(data, Mapping):
                    break
            else:
                return data
        except Exception:  # noqa: BLE001 - replayed below, where the error is raised as MONAI raises it
            pass
        if isinstance(self.transform, Randomizable):
            reseed(self.transform, int(seed) % MAX_SEED, self._states)
        return apply_transform(self.transform, self.dataset[int(index)])
