"""scripts/shift_robustness.py: the simulated acquisition shifts and the paired comparison of two groups of
segmenters on the demo data's test slices (tiny untrained networks)."""

from __future__ import annotations

import json
import os
import sys

import pytest
import torch
from helpers import BUNDLES, load_script
from monai.networks.nets import UNet

from monai_siamese.data import load_datalist
from monai_siamese.evaluation.scoring import score_segmentation
from monai_siamese.networks import save_weights
from monai_siamese.quality import save_segmenter_spec

TINY = {
    "spatial_size": [32, 32],
    "network_def#channels": [8, 16],
    "network_def#strides": [2],
    "network_def#num_res_units": 0,
}


@pytest.fixture(scope="module")
def shifts():
    return load_script("shift_robustness")


def test_shifts_keep_the_range_and_are_repeatable(shifts):
    x = torch.linspace(-1, 1, 64 * 64).reshape(1, 1, 64, 64).repeat(3, 1, 1, 1)
    for name, f in shifts.SHIFTS.items():
        y = f(x)
        assert y.shape == x.shape and torch.equal(y, f(x)), name  # fixed seeds: every model sees the same images
        assert (name == "none") == torch.equal(y, x), name
    g = shifts.SHIFTS["gamma 2.0"](x)
    assert g.min() == -1 and g.max() == 1 and g.mean() < x.mean()  # darker mid-tones, same end points
    ratio = ((shifts.SHIFTS["bias"](x) + 1) / (x + 1))[..., 16:48, 16:48]  # the middle, where a brain lies
    assert 0.8 < ratio.min() < ratio.max() < 1.5 and ratio.max() > 1.05  # a smooth field of tens of per cent
    low = shifts.SHIFTS["lowres"](torch.rand(1, 1, 16, 16))
    assert not torch.equal(low, shifts.SHIFTS["lowres"](torch.rand(1, 1, 16, 16)))


def test_groups_are_scored_and_compared_paired(shifts, tmp_path, demo_dir, monkeypatch, capsys):
    for group, seed in (("a", 0), ("b", 1)):
        for run in ("N004_d0_s0", "N004_d0_s1"):
            torch.manual_seed(seed + len(run))
            models = tmp_path / group / run / "models"
            save_weights(UNet(2, 1, 4, (8, 16), (2,), num_res_units=0), models / "model_final.pt")
            save_segmenter_spec(models, BUNDLES / "segmentation", ["train.json"], TINY, weights="model_final.pt")
    out = tmp_path / "out"
    argv = ["shift_robustness.py", "--out", str(out)]
    for group in ("a", "b"):
        argv += ["--group", f"{group}={tmp_path / group}/*/models/model_final.pt"]
    monkeypatch.setattr(sys, "argv", argv)
    shifts.main()
    res = json.loads((out / "shift_robustness.json").read_text())["results"]
    assert set(res) == {"a", "b"} and set(res["a"]) == {"N004_d0_s0", "N004_d0_s1"}
    assert set(res["a"]["N004_d0_s0"]) == set(shifts.SHIFTS)
    entries = load_datalist(os.path.join(demo_dir, "datalist.json"), "test")
    model = tmp_path / "a" / "N004_d0_s0" / "models" / "model_final.pt"
    plain = score_segmentation(model, entries, ["CSF", "GM", "WM"])
    assert res["a"]["N004_d0_s0"]["none"]["mean"] == pytest.approx(plain["dice"]["mean"])  # the evaluation's score
    table = (out / "shift_robustness.md").read_text()
    assert "| b - a, paired |" in table and "2 paired runs" in table
    monkeypatch.setattr(sys, "argv", ["shift_robustness.py", "--out", str(out), "--group", f"c={tmp_path}/none/*.pt"])
    with pytest.raises(SystemExit, match="no weights match"):
        shifts.main()
