"""The stochastic mask generator: hierarchical levels, determinism, plausibility checks on real masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.transforms import LoadImage

from monai_siamese.data import load_datalist
from monai_siamese.transforms import MaskStatistics, RandStochasticMaskd, StochasticMaskGenerator


@pytest.fixture(scope="module")
def real_masks(demo_dir):
    load = LoadImage(image_only=True, ensure_channel_first=True)
    return [load(e["label"]).long() for e in load_datalist(f"{demo_dir}/datalist.json", "training")[::4]]


def test_identity_when_every_level_is_off(real_masks):
    g = StochasticMaskGenerator(
        4, flip_prob=0, rotate_range=0, scale_range=0, translate_fraction=0, elastic_magnitude=(0, 0), boundary_pixels=0
    ).set_random_state(0)
    m = real_masks[3]
    torch.testing.assert_close(g(m), m)


def test_each_level_changes_the_mask_and_draws_are_seeded(real_masks):
    m = real_masks[5]
    off = dict(
        flip_prob=0, rotate_range=0, scale_range=0, translate_fraction=0, elastic_magnitude=(0, 0), boundary_pixels=0
    )
    for level in (
        dict(flip_prob=1.0),
        dict(rotate_range=0.3),
        dict(elastic_magnitude=(1.0, 1.0)),
        dict(boundary_pixels=1.0),
    ):
        g = StochasticMaskGenerator(4, **{**off, **level}).set_random_state(0)
        out = g(m)
        changed = float((out != m).float().mean())
        assert 0.001 < changed < 0.5, (level, changed)
    a = StochasticMaskGenerator(4).set_random_state(7)(m)
    b = StochasticMaskGenerator(4).set_random_state(7)(m)
    c = StochasticMaskGenerator(4).set_random_state(8)(m)
    torch.testing.assert_close(a, b)
    assert not torch.equal(a, c)


def test_generated_masks_are_plausible_and_diverse(real_masks):
    stats = MaskStatistics.from_masks(real_masks, 4)
    assert all(stats.is_plausible(m) for m in real_masks)
    g = StochasticMaskGenerator(4, statistics=stats).set_random_state(0)
    outs, accepted = [], 0
    for m in real_masks:
        o = g(m)
        accepted += g.last_accepted
        if g.last_accepted:
            assert stats.is_plausible(o)
            outs.append(o)
            assert set(np.unique(o.numpy())) <= {0, 1, 2, 3}
    assert accepted >= 0.7 * len(real_masks)
    assert any(not torch.equal(o, m) for o, m in zip(outs, real_masks))


def test_statistics_reject_islands_and_new_adjacency():
    lab = torch.zeros(1, 32, 32, dtype=torch.long)
    lab[0, 8:24, 8:24] = 1
    lab[0, 12:20, 12:20] = 2  # class 2 nested in class 1
    stats = MaskStatistics.from_masks([lab], 3)
    assert stats.nested.tolist() == [False, False, True]
    island = lab.clone()
    island[0, 1:3, 1:3] = 1  # a floating island outside the body
    assert any("components" in p for p in stats.problems(island))
    touching = lab.clone()
    touching[0, 12:20, 20:30] = 2  # class 2 now touches the background along a long edge
    assert any("classes 0 and 2 touch" in p and "never in the real masks" in p for p in stats.problems(touching))
    g = StochasticMaskGenerator(3, statistics=stats, translate_fraction=0.5, max_tries=3).set_random_state(0)
    out = g(lab)
    if not g.last_accepted:
        torch.testing.assert_close(out, lab)  # falls back to the input


def test_dict_transform(real_masks):
    t = RandStochasticMaskd("label", num_classes=4)
    t.set_random_state(0)
    d = t({"label": real_masks[2]})
    assert d["label"].shape == real_masks[2].shape and d["mask_generated"] is True
