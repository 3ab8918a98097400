"""RandPairGeometricd: the augmented mask source's geometric family applied to a training pair on one grid."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monai_siamese.transforms import RandPairGeometricd, random_geometric_params, warp_label


def _pair(size: int = 40) -> dict:
    yy, xx = np.indices((size, size))
    r = np.sqrt((yy - size / 2) ** 2 + (xx - size / 2 - 3) ** 2)
    lab = np.zeros((size, size), dtype=np.int64)
    lab[r <= size * 0.35] = 1
    lab[r <= size * 0.22] = 2
    lab[(r <= size * 0.1) & (xx > size / 2)] = 3
    label = torch.as_tensor(lab)[None]
    # an image that encodes its label (background at the image minimum, -1 as in the model's units)
    image = label.float() * 0.5 - 1.0
    return {"image": image, "label": label, "label_context": label.repeat(2, 1, 1), "name": "item"}


def test_image_and_labels_move_together():
    t = RandPairGeometricd(
        keys=("image", "previous_image"), label_keys=("label", "label_context"), num_classes=4, prob=1.0
    )
    t.set_random_state(3)
    d = _pair()
    out = t(d)
    assert out["name"] == "item" and "previous_image" not in out  # other keys kept, a missing optional key skipped
    assert out["label"].dtype == d["label"].dtype and out["image"].dtype == d["image"].dtype
    assert out["label"].shape == d["label"].shape and out["label_context"].shape == (2, 40, 40)
    assert not torch.equal(out["label"], d["label"])
    # the same transform as the augmented mask source: its parameters come from one seeded draw
    params = random_geometric_params(np.random.default_rng(t._seed), 2)
    np.testing.assert_array_equal(out["label"][0].numpy(), warp_label(d["label"][0].numpy(), params, 4))
    for c in range(2):  # every context channel on the same grid
        assert torch.equal(out["label_context"][c], out["label"][0])
    # the warped image still encodes the warped label (registered), and outside the field it is the minimum
    decoded = (out["image"][0] + 1.0) / 0.5
    assert (decoded - out["label"][0]).abs().lt(0.5).float().mean() > 0.97
    assert out["image"].min() >= -1.0 - 1e-5


def test_probability_and_seeding():
    d = _pair()
    off = RandPairGeometricd(num_classes=4, prob=0.0)
    out = off(d)
    assert torch.equal(out["image"], d["image"]) and torch.equal(out["label"], d["label"])
    t = RandPairGeometricd(num_classes=4, prob=1.0)
    runs = []
    for seed in (7, 7, 8):
        t.set_random_state(seed)
        runs.append(t(d)["label"])
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])
    half = RandPairGeometricd(num_classes=4, prob=0.5)
    half.set_random_state(0)
    changed = [not torch.equal(half(d)["label"], d["label"]) for _ in range(40)]
    assert 8 < sum(changed) < 32


def test_ranges_are_passed_and_checked():
    d = _pair()
    # rotation only, by at most 1 degree, no elastic field: almost every pixel keeps its label
    t = RandPairGeometricd(
        num_classes=4,
        prob=1.0,
        flip_prob=0.0,
        crop_pad_fraction=0.0,
        scale_range=(1.0, 1.0),
        rotate_degrees=1.0,
        shear_degrees=0.0,
        translate_fraction=0.0,
        elastic_magnitude=0.0,
    )
    t.set_random_state(1)
    assert (t(d)["label"] == d["label"]).float().mean() > 0.98
    with pytest.raises(ValueError, match="unknown geometric arguments \\['rotate'\\]"):
        RandPairGeometricd(num_classes=4, rotate=3)
