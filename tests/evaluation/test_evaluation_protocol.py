"""The evaluation protocol: fixed slice draws, generator discovery, mask sources, and the ``evaluate`` command end to
end on the micro preset (with resume)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from helpers import BUNDLES, REPO
from helpers import write_nifti

from monai_siamese.data import load_datalist
from monai_siamese.evaluation import (
    EvaluationConfig,
    MaskContext,
    check_generator_bundle,
    discover_methods,
    divisor_at_most,
    draw_regime,
    mask_source,
    mean_std,
    preset_config,
    register_mask_source,
)


def test_slice_draws_are_fixed_by_seed_and_hold_only_the_drawn_pairs(tmp_path, demo_dir):
    pool = load_datalist(os.path.join(demo_dir, "datalist.json"), "training")
    a = draw_regime(pool, 4, seed=0, folder=tmp_path / "a", num_classes=4)
    b = draw_regime(pool, 4, seed=0, folder=tmp_path / "b", num_classes=4)
    c = draw_regime(pool, 4, seed=1, folder=tmp_path / "c", num_classes=4)
    images = lambda d: [e["image"] for e in d["entries"]]  # noqa: E731
    assert images(a) == images(b) and images(a) != images(c) and len(set(images(a))) == 4
    assert set(images(a)) <= {e["image"] for e in pool}
    regime = json.loads(Path(a["datalist"]).read_text())
    assert [e["image"] for e in regime["training"]] == images(a) == [e["image"] for e in regime["validation"]]
    assert set(regime) >= {"training", "validation"} and "test" not in regime
    with pytest.raises(ValueError, match="fewer than N"):
        draw_regime(pool[:3], 4, seed=0, folder=tmp_path / "d", num_classes=4)


def test_slice_draws_from_3d_volumes_write_slices_with_geometry(tmp_path):
    affine = np.diag([1.5, 1.5, 2.0, 1.0])
    affine[:3, 3] = [-10, 20, 30]
    img = np.random.default_rng(0).normal(100, 10, (16, 16, 12)).astype(np.float32)
    lab = np.zeros((16, 16, 12), dtype=np.uint8)
    lab[4:12, 4:12, 2:10] = 1  # slices 2..9 have foreground
    pool = [
        {
            "image": write_nifti(tmp_path / "img.nii.gz", img, affine),
            "label": write_nifti(tmp_path / "lab.nii.gz", lab, affine),
        }
    ]
    d = draw_regime(pool, 3, seed=0, folder=tmp_path / "draw", num_classes=2)
    assert len(d["entries"]) == 3
    for e in d["entries"]:
        k = int(Path(e["image"]).name.split("_z")[1][:4])
        assert 2 <= k <= 9
        s = nib.load(e["image"])
        assert s.shape == (16, 16)
        np.testing.assert_allclose(s.get_fdata(), img[:, :, k], rtol=1e-6)  # source intensities
        np.testing.assert_allclose(s.affine[:3, 3], [-10, 20, 30 + 2.0 * k], atol=1e-5)  # the slice's position
        assert nib.load(e["label"]).get_fdata().max() == 1


def test_generator_discovery_and_required_configs(tmp_path):
    found = discover_methods(BUNDLES)
    assert "seg_guided_diffusion" in found and "segmentation" not in found
    check_generator_bundle(BUNDLES / "seg_guided_diffusion")
    (tmp_path / "gen_x" / "configs").mkdir(parents=True)
    for name in ("train.json", "inference.json"):
        (tmp_path / "gen_x" / "configs" / name).write_text("{}")
    (tmp_path / "segmentation" / "configs").mkdir(parents=True)
    assert discover_methods(tmp_path) == ["gen_x"]
    with pytest.raises(FileNotFoundError, match="demo.json"):
        check_generator_bundle(tmp_path / "gen_x")


def test_mask_sources_default_to_the_regime_and_accept_registered_generators(tmp_path):
    cfg = EvaluationConfig()
    ctx = MaskContext("regime.json", 4, 0, str(tmp_path), 4, cfg)
    assert mask_source("regime")(ctx) == ("regime.json", "training")
    register_mask_source("unit_test_masks", lambda c: (os.path.join(c.work_dir, "masks.json"), "training"))
    assert mask_source("unit_test_masks")(ctx) == (str(tmp_path / "masks.json"), "training")
    with pytest.raises(ValueError, match="unknown mask source"):
        mask_source("nope")
    with pytest.raises(ValueError, match="mask_datalist"):
        mask_source("datalist")(ctx)


def test_presets_and_helpers():
    demo, full = preset_config("demo"), preset_config("full")
    assert demo.regimes == [4, 8] and len(demo.seeds) >= 3 and demo.seg_iterations == 600
    assert len(full.seeds) >= 5 and full.seg_iterations == 1800
    with pytest.raises(ValueError, match="unknown evaluation setting"):
        demo.update({"regime": [4]})
    assert divisor_at_most(600) == 100 and divisor_at_most(4) == 4 and divisor_at_most(1800) == 100
    assert divisor_at_most(97) == 97 and divisor_at_most(101) == 1
    m, s, n = mean_std([0.5, 0.7, float("nan")])
    assert (round(m, 6), round(s, 6), n) == (0.6, round(float(np.std([0.5, 0.7], ddof=1)), 6), 2)


def test_evaluate_command_micro_preset_end_to_end_and_resume(tmp_path, demo_dir):
    out = tmp_path / "eval"
    cmd = [sys.executable, "-m", "monai_siamese", "evaluate", "--preset", "micro", "--out", str(out)]
    env = {**os.environ, "MONAI_SIAMESE_BUNDLES": str(BUNDLES), "PYTHONPATH": str(REPO)}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    report = (out / "report.md").read_text()
    assert "python -m monai_siamese evaluate --preset micro" in report
    assert "| 4 | real |" in report and "| 4 | real + seg_guided_diffusion |" in report
    assert (out / "figures" / "dice_by_regime.png").stat().st_size > 1000
    assert (out / "figures" / "samples_seg_guided_diffusion_N004_d0.png").is_file()
    results = json.loads((out / "results.json").read_text())
    methods = discover_methods(BUNDLES)
    assert {"seg_guided_diffusion", "siamese_diffusion", "meddiff_ft"} <= set(methods)
    assert {(r["arm"], r["regime"], r["draw"], r["seed"]) for r in results["runs"]} == {
        (arm, 4, 0, 0) for arm in ["real", *methods]
    }
    for run in results["runs"]:
        assert set(run["dice"]) == {"CSF", "GM", "WM", "mean"} and 0 <= run["dice"]["mean"] <= 1
    # MedDiff-FT fine-tunes the seg-guided generator of the same draw and filters with the draw's real-only
    # segmenter: it sees no other real data than the regime's N pairs
    mft = json.loads((out / "generators" / "meddiff_ft" / "N004_d0" / "train" / "result.json").read_text())
    assert (
        Path(mft["overrides"]["pretrained_path"]).parent
        == out / "generators" / "seg_guided_diffusion" / "N004_d0" / "models"
    )
    assert mft["overrides"]["datalist"] == gen_datalist_path(out) and mft["iterations"] == 2
    mft_sample = json.loads((out / "generators" / "meddiff_ft" / "N004_d0" / "sample" / "result.json").read_text())
    assert Path(mft_sample["overrides"]["segmenter_path"]) == out / "runs" / "real" / "N004_d0_s0" / "models"
    assert mft_sample["pairs"] == 8
    q = next(q for q in results["quality"] if q["method"] == "seg_guided_diffusion")
    assert q["pairs"] == 8 and q["masks"] == 4 and np.isfinite(q["fid"]) and 0 <= q["ms_ssim"] <= 1
    # fairness: the generator trained on the regime datalist only; its masks are the regime's; same budget
    regime = json.loads((out / "draws" / "N004_d0" / "datalist.json").read_text())
    gen = json.loads((out / "generators" / "seg_guided_diffusion" / "N004_d0" / "train" / "result.json").read_text())
    gen_datalist = json.loads(Path(gen["overrides"]["datalist"]).read_text())
    assert Path(gen["overrides"]["datalist"]).parent == out / "draws" / "N004_d0"
    assert {e["image"] for e in gen_datalist["training"]} == {e["image"] for e in regime["training"]}
    assert gen["iterations"] == 2
    synth = json.loads(
        (out / "generators" / "seg_guided_diffusion" / "N004_d0" / "synthetic" / "datalist.json").read_text()
    )
    assert {e["source_mask"] for e in synth["training"]} == {e["label"] for e in regime["training"]}
    arms = [
        json.loads((out / "runs" / a / "N004_d0_s0" / "train" / "result.json").read_text())
        for a in ("real", "seg_guided_diffusion")
    ]
    assert arms[0]["overrides"]["num_iterations"] == arms[1]["overrides"]["num_iterations"] == 4
    assert arms[0]["overrides"]["seed"] == arms[1]["overrides"]["seed"] == 0
    assert arms[0]["overrides"]["synthetic_datalist"] is None and arms[1]["overrides"]["synthetic_ratio"] == 0.5
    # an interrupted evaluation resumes: finished runs are not redone
    os.remove(out / "runs" / "seg_guided_diffusion" / "N004_d0_s0" / "test" / "result.json")
    before = (out / "runs" / "real" / "N004_d0_s0" / "test" / "result.json").stat().st_mtime_ns
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert r.stdout.count("done already") >= 8 + 3 * (len(methods) - 1) and r.stdout.count("finished in") == 1
    assert (out / "runs" / "real" / "N004_d0_s0" / "test" / "result.json").stat().st_mtime_ns == before
    assert json.loads((out / "results.json").read_text())["runs"] == results["runs"]


def gen_datalist_path(out: Path) -> str:
    return str(out / "draws" / "N004_d0" / "generator_datalist.json")
