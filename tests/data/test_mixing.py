"""Real + synthetic batches: a fixed synthetic fraction of every batch, equal coverage, determinism."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch

from monai_siamese.data import MixedBatchSampler, load_synthetic_datalists, synthetic_per_batch, tag_entries
from monai_siamese.data.datalist import DatalistError


def _batches(sampler, n):
    it = iter(sampler)
    return [[i for i, _ in next(it)] for _ in range(n)]


@pytest.mark.parametrize("ratio,expected", [(0.0, 0), (0.25, 2), (0.5, 4), (1.0, 8)])
def test_every_batch_has_the_same_number_of_synthetic_items(ratio, expected):
    sampler = MixedBatchSampler(num_real=10, num_synthetic=7, batch_size=8, synthetic_ratio=ratio, seed=3)
    batches = _batches(sampler, 6)  # an endless stream: several passes over both parts
    assert all(len(b) == 8 for b in batches)
    assert all(sum(i >= 10 for i in b) == expected for b in batches)
    assert all(0 <= i < 17 for b in batches for i in b)


def test_streams_cover_items_evenly_and_are_deterministic():
    a = MixedBatchSampler(num_real=12, num_synthetic=5, batch_size=4, synthetic_ratio=0.25, seed=1)
    assert len(a) == 4  # one pass over the real items: 12 / 3 real per batch
    idx = [i for b in _batches(a, 12) for i in b]
    real = Counter(i for i in idx if i < 12)
    assert set(real) == set(range(12)) and set(real.values()) == {3}  # three passes, each item once per pass
    syn = Counter(i for i in idx if i >= 12)
    assert set(syn) == set(range(12, 17)) and max(syn.values()) - min(syn.values()) <= 1
    b = MixedBatchSampler(num_real=12, num_synthetic=5, batch_size=4, synthetic_ratio=0.25, seed=1)
    assert [i for bb in _batches(b, 12) for i in bb] == idx
    c = MixedBatchSampler(num_real=12, num_synthetic=5, batch_size=4, synthetic_ratio=0.25, seed=2)
    assert [i for bb in _batches(c, 12) for i in bb] != idx


def test_resumed_stream_continues_with_the_same_batches_and_item_seeds():
    """Batch b depends only on (seed, rank, b): a sampler moved to position 5 gives what the uninterrupted one gives
    from its 6th batch on, item seeds included; the real batches do not depend on the synthetic share."""
    full = MixedBatchSampler(num_real=9, num_synthetic=4, batch_size=4, synthetic_ratio=0.25, seed=7)
    it = iter(full)
    first = [next(it) for _ in range(8)]
    resumed = MixedBatchSampler(num_real=9, num_synthetic=4, batch_size=4, synthetic_ratio=0.25, seed=7)
    resumed.set_position(5)
    it = iter(resumed)
    assert [next(it) for _ in range(3)] == first[5:]
    seeds = [s for b in first for _, s in b]
    assert len(set(seeds)) == len(seeds)  # every item access has its own augmentation seed
    other_rank = MixedBatchSampler(num_real=9, num_synthetic=4, batch_size=4, synthetic_ratio=0.25, seed=7, rank=1)
    assert next(iter(other_rank)) != first[0]


def test_no_synthetic_data_means_plain_real_batches():
    s = MixedBatchSampler(num_real=6, num_synthetic=0, batch_size=4, synthetic_ratio=0.5)
    assert s.n_synthetic == 0 and s.n_real == 4 and all(max(b) < 6 for b in _batches(s, 3))


def test_seeded_dataset_applies_the_item_seed():
    from monai.transforms import Compose, RandGaussianNoised

    from monai_siamese.data import SeededDataset

    base = [{"image": torch.zeros(1, 4, 4)} for _ in range(3)]
    ds = SeededDataset(base, Compose([RandGaussianNoised("image", prob=1.0)]))
    a, b, c = ds[(1, 11)]["image"], ds[(1, 11)]["image"], ds[(1, 12)]["image"]
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(base[1]["image"], torch.zeros(1, 4, 4))  # the cached item is not changed


def test_invalid_ratios_fail_clearly():
    with pytest.raises(ValueError, match="rounds to 0"):
        synthetic_per_batch(2, 0.1, num_synthetic=5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        MixedBatchSampler(num_real=4, num_synthetic=4, batch_size=4, synthetic_ratio=1.5)


def test_synthetic_datalists_are_tagged_and_reduced_to_common_keys(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        entries = [{"image": f"images/{name}{i}.nii.gz", "label": f"labels/{name}{i}.nii.gz", "synthetic": True,
                    "seed": i, "method": "m"} for i in range(2)]  # fmt: skip
        (tmp_path / name / "datalist.json").write_text(json.dumps({"training": entries}))
    out = load_synthetic_datalists([tmp_path / "a" / "datalist.json", str(tmp_path / "b" / "datalist.json")])
    assert len(out) == 4 and all(set(e) == {"image", "label", "synthetic"} and e["synthetic"] for e in out)
    assert out[0]["image"] == str((tmp_path / "a" / "images" / "a0.nii.gz").resolve())
    assert load_synthetic_datalists(None) == [] and load_synthetic_datalists([]) == []
    real = tag_entries([{"image": "x", "label": "y", "slice_index": 3}])
    assert real == [{"image": "x", "label": "y", "synthetic": False}]
    (tmp_path / "c.json").write_text(json.dumps({"training": [{"image": "x", "label": "y"}]}))
    with pytest.raises(DatalistError, match="not marked synthetic"):
        load_synthetic_datalists(tmp_path / "c.json", require_flag=True)


def test_synthetic_phase_ends_on_real_batches_and_resumes_exactly():
    """With ``synthetic_batches`` the first batches are mixed as before and the rest real only, the real stream going
    on where it was (every real item still seen equally often); batch b is still a pure function of b."""
    fixed = MixedBatchSampler(num_real=6, num_synthetic=5, batch_size=4, synthetic_ratio=0.5, seed=2)
    phased = MixedBatchSampler(num_real=6, num_synthetic=5, batch_size=4, synthetic_ratio=0.5, seed=2,
                               synthetic_batches=3)  # fmt: skip
    it_f, it_p = iter(fixed), iter(phased)
    first_f, first_p = [next(it_f) for _ in range(3)], [next(it_p) for _ in range(9)]
    assert first_p[:3] == first_f  # the synthetic phase is the fixed-ratio stream
    assert all(sum(i >= 6 for i, _ in b) == 2 for b in first_p[:3])
    assert all(len(b) == 4 and all(i < 6 for i, _ in b) for b in first_p[3:])  # then real only
    real = Counter(i for b in first_p for i, _ in b if i < 6)  # 3 x 2 + 6 x 4 = 30 real slots = 5 passes of 6
    assert set(real) == set(range(6)) and set(real.values()) == {5}
    seeds = [s for b in first_p for _, s in b]
    assert len(set(seeds)) == len(seeds)
    resumed = MixedBatchSampler(num_real=6, num_synthetic=5, batch_size=4, synthetic_ratio=0.5, seed=2,
                                synthetic_batches=3)  # fmt: skip
    resumed.set_position(2)  # interrupted inside the phase, resumed across the switch
    it_r = iter(resumed)
    assert [next(it_r) for _ in range(7)] == first_p[2:]
    # no synthetic data: the phase changes nothing
    plain = MixedBatchSampler(num_real=6, num_synthetic=0, batch_size=4, synthetic_ratio=0.5, seed=2,
                              synthetic_batches=3)  # fmt: skip
    assert _batches(plain, 5) == _batches(MixedBatchSampler(num_real=6, batch_size=4, seed=2), 5)


@pytest.mark.parametrize("until,expected", [(1.0, None), (0.5, 300), (0.0, 0), (0.25, 150)])
def test_synthetic_phase_batches(until, expected):
    from monai_siamese.data import synthetic_phase_batches

    assert synthetic_phase_batches(until, 600) == expected


def test_invalid_synthetic_phase_fails_clearly():
    from monai_siamese.data import synthetic_phase_batches

    with pytest.raises(ValueError, match="synthetic_until"):
        synthetic_phase_batches(1.5, 600)
    with pytest.raises(ValueError, match="synthetic_batches"):
        MixedBatchSampler(num_real=4, num_synthetic=4, batch_size=4, synthetic_ratio=0.5, synthetic_batches=-1)


def test_synthetic_only_transform_leaves_real_items_and_replays_per_seed():
    """``SyntheticOnlyd`` changes synthetic items only, the same way for the same seed, and does not move the random
    draws of the transforms before it in a ``Compose`` (so real items are augmented exactly as without it)."""
    from monai.transforms import Compose, RandGaussianNoised

    from monai_siamese.data import SeededDataset, SyntheticOnlyd

    items = [{"image": torch.zeros(1, 8, 8), "synthetic": s} for s in (False, True)]
    before = RandGaussianNoised("image", prob=1.0, std=1.0)
    only = SyntheticOnlyd([RandGaussianNoised("image", prob=1.0, std=1.0)])
    with_it = SeededDataset(items, Compose([before, only]))
    without = SeededDataset(items, Compose([RandGaussianNoised("image", prob=1.0, std=1.0)]))
    real, synthetic = with_it[(0, 5)], with_it[(1, 5)]
    assert torch.equal(real["image"], without[(0, 5)]["image"])  # real: only the first transform, same draws
    assert not torch.equal(synthetic["image"], without[(1, 5)]["image"])  # synthetic: noise added twice
    assert torch.equal(with_it[(1, 5)]["image"], synthetic["image"])  # same seed, same result (exact resume)
    assert not torch.equal(with_it[(1, 6)]["image"], synthetic["image"])
    plain = only({"image": torch.zeros(1, 4, 4), "synthetic": False})
    assert torch.equal(plain["image"], torch.zeros(1, 4, 4))
    unseeded = only({"image": torch.zeros(1, 4, 4), "synthetic": True})  # no seed given: its own generator
    assert float(unseeded["image"].abs().sum()) > 0
