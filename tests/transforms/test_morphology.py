"""Label erosion per class, editable regions and the inpainting condition."""

from __future__ import annotations

import numpy as np
import torch

from monai_siamese.transforms import ErodeLabeld, InpaintConditiond, editable_region, erode_label


def _two_classes():
    lab = np.zeros((20, 20), np.int64)
    lab[4:16, 4:10] = 1
    lab[4:16, 10:16] = 2
    return lab


def test_erosion_per_class_against_background():
    lab = _two_classes()
    out = erode_label(lab, {1: 1, 2: 0})
    assert (out[lab == 2] == 2).all()  # radius 0: class 2 untouched
    assert (out[5:15, 5:10] == 1).all() and (out[4, 4:10] == 0).all() and (out[4:16, 4] == 0).all()
    assert out[8, 9] == 1  # the boundary with class 2 is not background: kept


def test_erosion_against_any_class_and_transform():
    lab = _two_classes()
    out = erode_label(lab, [0, 1, 1], against="any")
    assert out[8, 9] == 0 and out[8, 10] == 0  # the shared boundary erodes too
    t = ErodeLabeld("label", radius=2)
    d = t({"label": torch.as_tensor(lab)[None]})
    assert int((d["label"] > 0).sum()) == 8 * 8  # 12x12 square minus 2 px all round


def test_erosion_leaves_thin_structures_whole_under_max_fraction():
    yy, xx = np.mgrid[:64, :64]
    r = np.hypot(yy - 31.5, xx - 31.5)
    lab = np.zeros((64, 64), np.int64)
    lab[r < 24] = 1  # a thin outer ring (CSF around a brain), width ~2 px
    lab[r < 22] = 2  # a thick blob inside it
    out = erode_label(lab, 1, max_fraction=0.2)
    assert np.array_equal(out == 1, lab == 1)  # erosion would take ~half the ring: left whole
    assert (out == 2).sum() == (lab == 2).sum()  # the blob touches only the ring, not background
    blob = (r < 20).astype(np.int64)  # alone, the blob touches background: 1 px trimmed (~10 %)
    trimmed = erode_label(blob, 1, max_fraction=0.2)
    lost = 1 - trimmed.sum() / blob.sum()
    assert 0.05 < lost < 0.2 and (trimmed <= blob).all()
    assert (erode_label(lab, 1) == 1).sum() < 0.6 * (lab == 1).sum()  # without the limit: ~48 % of the ring goes
    t = ErodeLabeld("label", radius=1, max_fraction=0.2)
    assert np.array_equal(t.apply(torch.as_tensor(lab)[None]).numpy()[0], out)


def test_editable_region_scales_with_structure_size():
    small = np.zeros((64, 64), bool)
    small[30:34, 30:34] = True
    big = np.zeros((64, 64), bool)
    big[16:48, 16:48] = True
    r_small, m_small = editable_region(small, 0.25)
    r_big, m_big = editable_region(big, 0.25)
    assert m_small == 1.0 and m_big == 8.0  # max(min_margin, 0.25 * sqrt(area))
    assert r_big.sum() > big.sum() and r_big[big].all()


def test_inpaint_condition_masks_the_region():
    lab = torch.as_tensor(_two_classes())[None]
    img = torch.rand(1, 20, 20) * 2 - 1
    t = InpaintConditiond(num_classes=3, margin_range=(0.1, 0.1), min_margin=1.0)
    d = t({"image": img, "label": lab})
    cond, region = d["cond"], d["region"]
    assert cond.shape == (4, 20, 20) and region.shape == (1, 20, 20)
    assert (region[0][lab[0] > 0] == 1).all()
    torch.testing.assert_close(cond[3][region[0] == 0], img[0][region[0] == 0])
    assert (cond[3][region[0] == 1] == 0).all()
