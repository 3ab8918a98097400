"""The feature-space quality filter: each test rejects what it should, and only that."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from monai_siamese.quality.filter import FeatureSpaceQualityFilter, per_class_dice


def _pairs(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.zeros(n, 1, 16, 16, dtype=torch.long)
    images = torch.full((n, 1, 16, 16), -1.0)
    for i in range(n):
        r = 3 + i % 3
        labels[i, 0, 8 - r : 8 + r, 8 - r : 8 + r] = 1
        labels[i, 0, 7:9, 7:9] = 2
        images[i][labels[i] == 1] = 0.2
        images[i][labels[i] == 2] = 0.8
        images[i] += 0.02 * torch.randn(1, 16, 16, generator=g)
    return images, labels


class OracleSegmenter(torch.nn.Module):
    """Thresholds the intensity: the right answer for the synthetic pairs above."""

    def forward(self, x):
        lab = (x[:, 0] > -0.5).long() + (x[:, 0] > 0.5).long()
        return F.one_hot(lab, 3).permute(0, 3, 1, 2).float()


def _features(x):
    return torch.stack([x.mean((1, 2, 3)), x.std((1, 2, 3)), (x > 0.5).float().mean((1, 2, 3))], 1)


def test_per_class_dice():
    a = torch.tensor([[0, 1, 1, 2]])
    torch.testing.assert_close(per_class_dice(a, a, 3), torch.tensor([[1.0, 1.0]]))
    d = per_class_dice(a, torch.tensor([[0, 1, 0, 0]]), 3)
    assert abs(float(d[0, 0]) - 2 / 3) < 1e-6 and float(d[0, 1]) == 0


def test_filter_accepts_good_and_rejects_each_failure():
    real_img, real_lab = _pairs(12)
    good_img, good_lab = _pairs(4, seed=1)
    full = FeatureSpaceQualityFilter(OracleSegmenter(), _features, real_img, real_lab, num_classes=3, k=2)
    assert all(ok for ok, _ in full(good_img, good_lab))
    # unfaithful: the mask is shifted away from what the image shows
    shifted = torch.roll(good_lab[:1], shifts=5, dims=-1)
    # outlier: a much brighter background (the oracle still reads it as background)
    bright = torch.where(good_lab[1:2] == 0, torch.full_like(good_img[1:2], -0.6), good_img[1:2])
    # intensity: class 1 at 0.45 (still class 1 for the oracle), far outside 0.2 +- 3 sigma
    dim = torch.where(good_lab[2:3] == 1, torch.full_like(good_img[2:3], 0.45), good_img[2:3])
    cases = {
        "faithfulness": (good_img[:1], shifted),
        "outlier": (bright, good_lab[1:2]),
        "intensity": (dim, good_lab[2:3]),
    }
    for name, (img, lab) in cases.items():
        only = FeatureSpaceQualityFilter(OracleSegmenter(), _features, real_img, real_lab, 3, tests=[name], k=2)
        assert only(img, lab) == [(False, name)], name
        assert only(good_img, good_lab) == [(True, None)] * 4, name
    # all tests: the first failing one is the reason, and counts add up
    verdicts = full(torch.cat([good_img[:1], good_img[3:]]), torch.cat([shifted, good_lab[3:]]))
    assert verdicts == [(False, "faithfulness"), (True, None)]
    assert full.counts["faithfulness"] == 1


def test_filter_resizes_to_the_segmenter_size():
    real_img, real_lab = _pairs(8)
    filt = FeatureSpaceQualityFilter(OracleSegmenter(), _features, real_img, real_lab, 3, k=2, input_size=(32, 32))
    img, lab = _pairs(2, seed=3)
    assert all(ok for ok, _ in filt(img, lab))


def test_build_quality_filter_loads_a_segmenter_by_path(tmp_path):
    """A segmentation checkpoint path turns on the faithfulness and outlier tests (features from its encoder)."""
    from helpers import BUNDLES
    from monai.networks.nets import UNet

    from monai_siamese.networks import save_weights
    from monai_siamese.quality import Segmenter, build_quality_filter, save_segmenter_spec

    torch.manual_seed(0)
    net = UNet(2, 1, 3, (8, 16, 32), (2, 2), num_res_units=0)
    save_weights(net, tmp_path / "models" / "model_final.pt")
    tiny = {
        "num_classes": 3,
        "spatial_size": [16, 16],
        "network_def#channels": [8, 16, 32],
        "network_def#strides": [2, 2],
        "network_def#num_res_units": 0,
    }
    save_segmenter_spec(tmp_path / "models", BUNDLES / "segmentation", ["train.json"], tiny, weights="model_final.pt")
    images, labels = _pairs(8)
    real = [{"image": images[i], "label": labels[i]} for i in range(8)]
    filt = build_quality_filter(real, 3, segmenter=str(tmp_path / "models"), device="cpu", dice_threshold=0.99)
    assert [t.value for t in filt.tests] == ["faithfulness", "outlier", "intensity"]
    seg = Segmenter(net, filt.segmenter.segmenter.settings, device="cpu")
    assert torch.allclose(filt.feature_fn(images), seg.features(images), atol=1e-5)
    # an untrained network disagrees with the masks: every pair fails faithfulness first
    verdicts = filt(images, labels)
    assert verdicts == [(False, "faithfulness")] * 8 and filt.counts["faithfulness"] == 8


def test_intensity_band_is_a_small_sample_prediction_interval():
    """The band covers new real observations at the nominal rate for few real pairs too (the plug-in mean +- 3 sd
    of 4 values does not), and tends to mean +- 3 sd for many."""
    from scipy import stats

    from monai_siamese.quality.filter import prediction_half_width

    g = torch.Generator().manual_seed(0)
    for n in (4, 8):
        fits = torch.randn(20000, n, generator=g, dtype=torch.float64)
        new = torch.randn(20000, generator=g, dtype=torch.float64)
        mean, sd = fits.mean(1), fits.std(1)
        half = prediction_half_width(sd, torch.full((20000,), n), 3.0)
        miss = ((new - mean).abs() > half).double().mean().item()
        plugin_miss = ((new - mean).abs() > 3 * sd).double().mean().item()
        nominal = 2 * (1 - stats.norm.cdf(3.0))  # 0.0027
        assert miss < 3 * nominal, (n, miss)
        assert plugin_miss > 5 * nominal, (n, plugin_miss)
    big = prediction_half_width(torch.tensor([1.0]), torch.tensor([10_000]), 3.0)
    assert abs(float(big) - 3.0) < 0.01
    assert torch.isinf(prediction_half_width(torch.tensor([1.0]), torch.tensor([1]), 3.0)).all()
