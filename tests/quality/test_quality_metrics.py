"""Faithfulness, FID/KID and MS-SSIM on cases with known answers."""

from __future__ import annotations

import math

import pytest
import torch

from monai_siamese.quality import (
    InceptionFeatures,
    faithfulness_dice,
    frechet_distance,
    kernel_inception_distance,
    mean_pairwise_ms_ssim,
    ms_ssim_kernel_size,
    ms_ssim_settings,
    per_class_scores,
)


def _masks(n: int = 6, size: int = 32) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    masks = torch.zeros(n, 1, size, size, dtype=torch.long)
    for i in range(n):
        r = int(torch.randint(4, 10, (1,), generator=gen))
        masks[i, 0, 16 - r : 16 + r, 16 - r : 16 + r] = 1
        masks[i, 0, 16 - r // 2 : 16 + r // 2, 16 - r // 2 : 16 + r // 2] = 2
    masks[0, 0, 2:5, 2:5] = 3
    return masks


def test_faithfulness_is_one_for_a_perfect_segmenter_and_nan_for_absent_classes():
    masks = _masks()
    images = masks.float() / 3 * 2 - 1  # the image encodes its mask; the stub segmenter reads it back
    stub = lambda x: ((x + 1) / 2 * 3).round().long()  # noqa: E731
    dice = faithfulness_dice(stub, images, masks, num_classes=4, batch_size=4)
    assert dice.shape == (6, 3)
    assert torch.all(dice[:, :2] == 1.0)
    assert dice[0, 2] == 1.0 and torch.isnan(dice[1:, 2]).all()  # class 3 only in mask 0
    wrong = faithfulness_dice(lambda x: torch.zeros_like(x).long(), images, masks, num_classes=4)
    assert torch.all(wrong[:, :2] == 0.0)


def test_per_class_scores_match_hand_computed_dice_and_iou():
    pred = torch.zeros(1, 1, 4, 4, dtype=torch.long)
    lab = torch.zeros(1, 1, 4, 4, dtype=torch.long)
    pred[0, 0, :2, :2] = 1  # 4 px
    lab[0, 0, :2, :] = 1  # 8 px, overlap 4
    s = per_class_scores(pred, lab, num_classes=2)
    assert math.isclose(float(s["dice"][0, 0]), 2 * 4 / 12, rel_tol=1e-5)
    assert math.isclose(float(s["iou"][0, 0]), 4 / 8, rel_tol=1e-5)


def test_fid_and_kid_are_zero_for_equal_distributions_and_grow_with_a_shift():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(400, 8, generator=gen)
    b = torch.randn(400, 8, generator=gen)  # same distribution, independent samples
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    fid_same, fid_shift = frechet_distance(a, b), frechet_distance(a, b + 1.0)
    assert fid_same < 0.3 and fid_shift > 7.0  # ||mu|| ^ 2 = 8 for a shift of 1 in 8 dimensions
    kid_same, std_same = kernel_inception_distance(a, b, num_subsets=20, subset_size=200)
    kid_shift, _ = kernel_inception_distance(a, b + 1.0, num_subsets=20, subset_size=200)
    assert abs(kid_same) < 3 * std_same + 0.05 and kid_shift > 20 * abs(kid_same) + 0.5
    assert kernel_inception_distance(a, b + 2.0, num_subsets=20, subset_size=200)[0] > kid_shift


def test_ms_ssim_is_one_for_identical_samples_and_lower_for_different_ones():
    gen = torch.Generator().manual_seed(0)
    base = torch.rand(1, 1, 64, 64, generator=gen) * 2 - 1
    same = base.repeat(3, 1, 1, 1)
    assert mean_pairwise_ms_ssim([same]) == pytest.approx(1.0, abs=1e-5)
    different = torch.rand(3, 1, 64, 64, generator=gen) * 2 - 1
    assert mean_pairwise_ms_ssim([different]) < 0.5
    noisy = (same + 0.2 * torch.randn(3, 1, 64, 64, generator=gen)).clamp(-1, 1)
    assert 0.3 < mean_pairwise_ms_ssim([noisy]) < 1.0
    assert math.isnan(mean_pairwise_ms_ssim([base]))  # one sample per mask: no pair
    assert mean_pairwise_ms_ssim([same[:, :, :32, :32]]) == pytest.approx(1.0, abs=1e-5)  # fewer scales at 32 px


def test_ms_ssim_window_follows_monai_size_rule():
    assert [ms_ssim_kernel_size((s, s)) for s in (64, 128, 256)] == [3, 7, 11]
    k, w = ms_ssim_settings((32, 32))
    assert k == 3 and len(w) == 4 and sum(w) == pytest.approx(1.0, abs=1e-3)
    with pytest.raises(ValueError):
        ms_ssim_settings((2, 2))


def test_inception_features_from_a_local_torchscript_file(tmp_path):
    class TinyInception(torch.nn.Module):
        def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
            assert x.shape[1:] == (3, 299, 299)
            return torch.stack([x.mean((1, 2, 3)), x.amax((1, 2, 3))], 1)

    path = tmp_path / "inception.pt"
    torch.jit.script(TinyInception()).save(str(path))
    feats = InceptionFeatures(path)(torch.full((2, 1, 32, 32), 1.0))
    assert feats.shape == (2, 2) and torch.allclose(feats, torch.full((2, 2), 255.0))
    with pytest.raises(FileNotFoundError):
        InceptionFeatures(tmp_path / "missing.pt")
