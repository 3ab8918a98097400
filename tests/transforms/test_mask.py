"""Mask encoding, random mask ablation (frequencies match p) and condition dropout."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest
import torch

from monai_siamese.transforms import (
    NULL_CONDITION,
    BatchMaskAblation,
    EncodeMaskd,
    RandConditionDropoutd,
    RandMaskAblationd,
    class_presence,
    encode_mask,
    mask_channels,
)


def _label():
    lab = torch.zeros(1, 8, 8, dtype=torch.int64)
    lab[0, 1:3, 1:3] = 1
    lab[0, 3:5, 3:5] = 2
    lab[0, 5:7, 5:7] = 3
    return lab


def test_encodings():
    lab = _label()
    oh = encode_mask(lab, 4, "onehot")
    assert oh.shape == (4, 8, 8) and mask_channels(4, "onehot") == 4
    torch.testing.assert_close(oh.sum(0), torch.ones(8, 8))
    assert bool(oh[2, 3, 3] == 1) and bool(oh[0, 3, 3] == 0)
    f = encode_mask(lab, 4, "faithful")
    assert f.shape == (1, 8, 8) and mask_channels(4, "faithful") == 1
    assert float(f[0, 5, 5]) == pytest.approx(3 / 255)
    batch = encode_mask(lab[None].repeat(2, 1, 1, 1), 4, "onehot")
    assert batch.shape == (2, 4, 8, 8)
    with pytest.raises(ValueError):
        encode_mask(lab + 4, 4)


@pytest.mark.parametrize("encoding", ["onehot", "faithful"])
def test_per_sample_ablation_subsets_are_uniform(encoding):
    cond = encode_mask(_label(), 4, encoding)
    t = RandMaskAblationd("cond", num_classes=4, encoding=encoding, prob=0.5)
    t.set_random_state(0)
    n = 4000
    counts = Counter()
    for _ in range(n):
        out = t({"cond": cond})["cond"]
        present = class_presence(out, 4, encoding)
        assert present[0], "background encoding dropped"
        counts[tuple(present[1:])] += 1
    assert set(counts) == set(itertools.product([False, True], repeat=3))  # all 2^(C-1) subsets occur
    for subset, c in counts.items():
        assert abs(c / n - 1 / 8) < 0.025, (subset, c / n)


def test_ablation_probability_other_than_half():
    cond = encode_mask(_label(), 4)
    t = RandMaskAblationd("cond", num_classes=4, prob=0.2)
    t.set_random_state(1)
    dropped = torch.zeros(4)
    n = 3000
    for _ in range(n):
        present = class_presence(t({"cond": cond})["cond"], 4, "onehot")
        dropped += torch.tensor([not p for p in present], dtype=torch.float)
    assert dropped[0] == 0
    for c in (1, 2, 3):
        assert abs(dropped[c] / n - 0.2) < 0.03


def test_onehot_ablation_makes_pixels_unknown_not_background():
    cond = encode_mask(_label(), 4)
    t = RandMaskAblationd("cond", num_classes=4, prob=1.0)  # drop every foreground class
    out = t({"cond": cond})["cond"]
    assert float(out[1:].sum()) == 0
    assert float(out[:, 3, 3].sum()) == 0  # class-2 pixel: all channels zero = unknown
    assert float(out[0, 0, 0]) == 1  # background unchanged


def test_per_batch_ablation_same_pattern_for_the_batch():
    cond = encode_mask(_label()[None].repeat(6, 1, 1, 1), 4)
    null = torch.full_like(cond[0], NULL_CONDITION)
    cond[5] = null  # a dropped-out sample stays null
    t = BatchMaskAblation(num_classes=4, prob=0.5)
    t.set_random_state(0)
    patterns = Counter()
    for _ in range(800):
        out = t(cond)
        pres = [tuple(class_presence(out[b], 4, "onehot")) for b in range(5)]
        assert len(set(pres)) == 1
        torch.testing.assert_close(out[5], null)
        patterns[pres[0][1:]] += 1
    assert len(patterns) == 8
    assert all(abs(c / 800 - 1 / 8) < 0.05 for c in patterns.values())


def test_condition_dropout():
    cond = encode_mask(_label(), 4)
    t = RandConditionDropoutd("cond", prob=0.1)
    t.set_random_state(0)
    n_null = sum(bool((t({"cond": cond})["cond"] == NULL_CONDITION).all()) for _ in range(2000))
    assert abs(n_null / 2000 - 0.1) < 0.025


def test_encode_maskd_on_dict():
    d = EncodeMaskd("label", num_classes=4)({"label": _label()})
    assert d["cond"].shape == (4, 8, 8) and d["label"].shape == (1, 8, 8)
