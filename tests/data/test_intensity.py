"""Intensity presets map to [-1, 1] and back to the source's units."""

from __future__ import annotations

import torch

from monai_siamese.data import ScaleIntensityPresetd, from_unit_range


def test_ct_window_maps_to_unit_range_and_back():
    hu = torch.tensor([[-1000.0, -160.0, 40.0, 240.0, 1000.0]])
    d = ScaleIntensityPresetd("image", preset="ct", window=(-160, 240))({"image": hu})
    torch.testing.assert_close(d["image"], torch.tensor([[-1.0, -1.0, 0.0, 1.0, 1.0]]))
    torch.testing.assert_close(d["intensity_range"], torch.tensor([-160.0, 240.0]))
    back = from_unit_range(d["image"], *d["intensity_range"].tolist())
    torch.testing.assert_close(back, torch.tensor([[-160.0, -160.0, 40.0, 240.0, 240.0]]))


def test_mr_percentiles_ignore_the_background():
    img = torch.zeros(1, 100, 100)
    img[:, 40:60, 40:60] = torch.linspace(100, 200, 400).reshape(20, 20)
    d = ScaleIntensityPresetd("image", preset="mr", percentiles=(0.5, 99.5))({"image": img})
    lo, hi = d["intensity_range"].tolist()
    assert 100 <= lo < 102 and 198 < hi <= 200  # percentiles of the tissue, not of the zeros
    assert float(d["image"].min()) == -1.0 and float(d["image"].max()) == 1.0


def test_rgb_preset_is_fixed_0_255():
    img = torch.tensor([[[0.0, 127.5, 255.0]]]).repeat(3, 1, 1)
    d = ScaleIntensityPresetd("image", preset="rgb")({"image": img})
    torch.testing.assert_close(d["image"][0, 0], torch.tensor([-1.0, 0.0, 1.0]))
