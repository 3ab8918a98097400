"""The evaluation protocol: fixed slice draws, generator discovery, mask sources, and the ``evaluate`` command end to
end on the micro preset (with resume)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from helpers import BUNDLES, REPO, write_nifti

from monai_siamese.bundles import GENERATORS, check_bundle, discover_generators, spec
from monai_siamese.data import load_datalist
from monai_siamese.evaluation import (
    Arm,
    EvaluationConfig,
    divisor_at_most,
    draw_regime,
    mean_std,
    preset_config,
    source_tag,
    synthetic_arms,
)
from monai_siamese.evaluation.config import ConfigError
from monai_siamese.evaluation.protocol import base_generator, resolve_config
from monai_siamese.evaluation.report import ci95
from monai_siamese.evaluation.steps import cached_step
from monai_siamese.evaluation import tasks
from monai_siamese.evaluation.tasks import training_overrides


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
    found = discover_generators(BUNDLES)
    assert "seg_guided_diffusion" in found and "segmentation" not in found
    check_bundle(BUNDLES / "seg_guided_diffusion", ["train.json", "demo.json", "inference.json"])
    (tmp_path / "gen_x" / "configs").mkdir(parents=True)
    for name in ("train.json", "inference.json"):
        (tmp_path / "gen_x" / "configs" / name).write_text("{}")
    (tmp_path / "segmentation" / "configs").mkdir(parents=True)
    assert discover_generators(tmp_path) == ["gen_x"]
    with pytest.raises(FileNotFoundError, match="demo.json"):
        check_bundle(tmp_path / "gen_x", ["train.json", "demo.json"])


def test_arms_cross_methods_sources_and_selections():
    cfg = EvaluationConfig(
        methods=["a", "b"], mask_sources=["regime", "augmented:0.5,interpolated:0.5"], selections=["none", "filter"],
        selection_methods=["a"],
    )  # fmt: skip
    names = [arm.name for arm in synthetic_arms(cfg)]
    assert names == [
        "a@regime", "a@augmented50+interpolated50", "a@augmented50+interpolated50+filter",
        "b@regime", "b@augmented50+interpolated50",
    ]  # fmt: skip
    assert Arm().name == "real" and source_tag("generated") == "generated"
    assert Arm("a", "augmented", "select").label == "real + a (augmented, select)"
    m, lo, hi, n = ci95([0.02, 0.03, 0.04, 0.05, 0.03, 0.04])
    assert n == 6 and lo < m < hi and lo > 0 and ci95([0.1]) == (0.1, 0.1, 0.1, 1)


def test_presets_and_helpers():
    demo, full = preset_config("demo"), preset_config("full")
    assert demo.regimes == [4, 8] and len(demo.seeds) >= 3 and demo.seg_iterations == 600
    assert len(demo.draws) >= 2 and demo.seg_spatial_size == 128 and "regime" in demo.mask_sources
    assert len(full.seeds) >= 5 and full.seg_iterations == 1800
    # the concat-conditioned generators sample with classifier-free guidance, Siamese-Diffusion unguided
    assert {m: o.get("guidance_scale") for m, o in demo.method_overrides.items()} == {
        "seg_guided_diffusion": 2.0,
        "meddiff_ft": 2.0,
        "siamese_diffusion": None,
    }
    # every generator samples with a sampler of its objective: Siamese-Diffusion's demo.json trains a rectified flow
    siamese_demo = json.loads((BUNDLES / "siamese_diffusion" / "configs" / "demo.json").read_text())
    assert siamese_demo["objective"] == "rflow" and demo.method_overrides["siamese_diffusion"]["sampler"] == "euler"
    assert demo.gen_infer_overrides["sampler"] == "dpmpp_2m"  # the DDPM-v ones
    # the protocol's baseline augmentation (flips + affine): the segmentation bundle's photometric one is off
    seg_train = json.loads((BUNDLES / "segmentation" / "configs" / "train.json").read_text())
    assert seg_train["intensity_prob"] > 0
    assert demo.seg_overrides["intensity_prob"] == full.seg_overrides["intensity_prob"] == 0
    with pytest.raises(ValueError, match="unknown evaluation setting"):
        demo.update({"regime": [4]})
    assert divisor_at_most(600) == 100 and divisor_at_most(4) == 4 and divisor_at_most(1800) == 100
    assert divisor_at_most(97) == 97 and divisor_at_most(101) == 1
    m, s, n = mean_std([0.5, 0.7, float("nan")])
    assert (round(m, 6), round(s, 6), n) == (0.6, round(float(np.std([0.5, 0.7], ddof=1)), 6), 2)


def test_cached_step_redoes_a_result_made_with_other_settings(tmp_path):
    calls = []

    def step(size):
        calls.append(size)
        return {"image_size": [size, size]}

    same = lambda r: r["image_size"] == [64, 64]  # noqa: E731
    assert cached_step(tmp_path / "s", lambda: step(64), log=lambda m: None, valid=same)["image_size"] == [64, 64]
    assert cached_step(tmp_path / "s", lambda: step(64), log=lambda m: None, valid=same)["image_size"] == [64, 64]
    assert calls == [64]  # stored and valid: not redone
    other = lambda r: r["image_size"] == [128, 128]  # noqa: E731
    assert cached_step(tmp_path / "s", lambda: step(128), log=lambda m: None, valid=other)["image_size"] == [128, 128]
    assert calls == [64, 128] and json.loads((tmp_path / "s" / "result.json").read_text())["image_size"] == [128, 128]


def test_cached_step_keys_results_by_settings_and_inputs_and_clears_stale_outputs(tmp_path):
    calls, quiet = [], (lambda m: None)

    def train(folder, lr):  # a step that resumes from what it finds in its outputs, as a bundle does
        ckpt = folder / "models" / "ckpt.txt"
        found = ckpt.read_text() if ckpt.is_file() else None
        calls.append((lr, found))
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        ckpt.write_text(f"lr={lr}")
        return {"lr": lr, "resumed_from": found}

    def step(root, lr, after=()):
        return cached_step(
            root / "train", lambda: train(root, lr), quiet, settings={"lr": lr, "data": str(root / "data.json"),
                                                                  "pool": str(tmp_path / "pool.json")},
            after=after, outputs=[root / "models"],
        )

    root = tmp_path / "eval"
    first = step(root, 0.1)
    assert first["resumed_from"] is None and first["run_id"] and first["key"]["settings"]["data"] == "data.json"
    assert first["key"]["settings"]["pool"] == str(tmp_path / "pool.json")  # outside the evaluation: as it is
    assert step(root, 0.1) == first and len(calls) == 1  # same settings: kept
    # other settings: redone from scratch (the checkpoint of the other settings is removed first, not resumed)
    second = step(root, 0.2)
    assert second["lr"] == 0.2 and second["resumed_from"] is None and second["run_id"] != first["run_id"]
    # an interrupted run resumes from its outputs with its own settings, starts again with other ones
    os.remove(root / "train" / "result.json")
    assert step(root, 0.2)["resumed_from"] == "lr=0.2"
    os.remove(root / "train" / "result.json")
    assert step(root, 0.3)["resumed_from"] is None
    # a step made from another run of a step it reads is redone; kept while that run stands
    def down():
        return cached_step(root / "score", lambda: {"n": len(calls)}, quiet, settings={}, after=[root / "train"])

    score = down()
    assert down() == score
    step(root, 0.4)
    assert down()["n"] == score["n"] + 1
    # a whole evaluation folder copied elsewhere resumes (paths inside it compared relative to it)
    (root / "config.json").write_text("{}")
    copy = tmp_path / "deeper" / "copy"
    shutil.copytree(root, copy)
    for f in copy.rglob("*.json"):
        f.write_text(f.read_text().replace(str(root), str(copy)))
    n = len(calls)
    assert step(copy, 0.4)["run_id"] == json.loads((root / "train" / "result.json").read_text())["run_id"]
    assert len(calls) == n
    # a result stored before settings were recorded is kept
    old = tmp_path / "old"
    (old / "train").mkdir(parents=True)
    (old / "train" / "result.json").write_text(json.dumps({"lr": 0.9}))
    assert step(old, 0.1) == {"lr": 0.9} and len(calls) == n


def test_generator_training_key_leaves_out_sampling_settings():
    bundle = str(BUNDLES / "seg_guided_diffusion")
    over = {"guidance_scale": 1.0, "sampler": "euler", "objective": "rflow", "network_def#channels": [8, 16]}
    assert training_overrides(bundle, ["train.json", "demo.json"], over) == {
        "objective": "rflow",
        "network_def#channels": [8, 16],
    }


def test_training_and_sampling_steps_are_redone_after_their_bundle_changed_version(tmp_path, monkeypatch):
    """A step made by another version of its bundle (other defaults, e.g. MedDiff-FT 0.2.6's erosion limit) is not
    reused: the bundle's metadata version is part of every training and sampling key."""
    bundle = tmp_path / "seg_guided_diffusion"
    shutil.copytree(BUNDLES / "seg_guided_diffusion" / "configs", bundle / "configs")
    calls = []
    monkeypatch.setattr(tasks, "train_generator", lambda *a, **k: calls.append("train") or {"trained": True})
    monkeypatch.setattr(tasks, "sample_generator", lambda *a, **k: calls.append("sample") or {"datalist": "x"})
    monkeypatch.setattr(tasks, "synthetic_quality", lambda *a, **k: {"faithfulness": 1.0})
    monkeypatch.setattr("monai_siamese.quality.load_segmenter", lambda *a, **k: None)
    folder = tmp_path / "eval" / "generators" / "g"

    def run():
        tasks.generator_run(str(folder), str(bundle), ["train.json"], "d.json", 0, 10, {})
        judge = str(tmp_path / "judge" / "models" / "m.pt")
        sets = str(folder / "sets" / "s")
        models = str(folder / "models")
        tasks.sampling_run(sets, str(bundle), ["inference.json"], models, 0, {}, judge, [], ["bg", "fg"], 1,
                           after=[str(folder / "train")])

    run()
    run()
    assert calls == ["train", "sample"]  # the same version: both reused
    meta = bundle / "configs" / "metadata.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "version": "99.0.0"}))
    run()
    assert calls == ["train", "sample", "train", "sample"]  # a new version: retrained and resampled
    assert tasks.bundle_version(str(bundle)) == "99.0.0" and tasks.bundle_version(str(tmp_path)) is None


def test_warm_starts_must_name_evaluated_generators_trained_from_scratch(demo_dir):
    cfg = preset_config("micro").update({"methods": ["seg_guided_diffusion", "siamese_diffusion", "meddiff_ft"]})
    ok = resolve_config(cfg.update({"warm_starts": {"siamese_diffusion": "seg_guided_diffusion"}}))
    assert base_generator(ok, "siamese_diffusion") == "seg_guided_diffusion"
    assert base_generator(ok, "meddiff_ft") == "seg_guided_diffusion"  # its bundle's own base
    assert base_generator(ok, "seg_guided_diffusion") is None
    assert spec("siamese_diffusion").pretrained_key == "pretrained_unet" and spec("meddiff_ft").pretrained_key == (
        "pretrained_path"
    )
    for bad in (
        {"siamese_diffusion": "unknown_generator"},  # not evaluated
        {"siamese_diffusion": "siamese_diffusion"},  # itself
        {"siamese_diffusion": "meddiff_ft"},  # a base that is itself fine-tuned
        {"meddiff_ft": "siamese_diffusion"},  # a method with a base of its own
    ):
        with pytest.raises(ConfigError, match="warm_starts '(siamese_diffusion|meddiff_ft)'"):
            resolve_config(cfg.update({"warm_starts": bad}))


def test_evaluate_command_micro_preset_end_to_end_and_resume(tmp_path, demo_dir):
    out = tmp_path / "eval"
    cmd = [sys.executable, "-m", "monai_siamese", "evaluate", "--preset", "micro", "--synthetic_until", "0.5"]
    cmd += ["--out", str(out), "--set", 'warm_starts={"siamese_diffusion": "seg_guided_diffusion"}']
    env = {**os.environ, "MONAI_SIAMESE_BUNDLES": str(BUNDLES), "PYTHONPATH": str(REPO)}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    report = (out / "report.md").read_text()
    assert "python -m monai_siamese evaluate --preset micro" in report
    assert "| 4 | real |" in report and "| 4 | real + seg_guided_diffusion (augmented) |" in report
    assert "| 4 | real + seg_guided_diffusion (augmented, select) |" in report
    assert (out / "figures" / "dice_by_regime.png").stat().st_size > 1000
    assert (out / "figures" / "samples_seg_guided_diffusion_augmented_N004_d0.png").is_file()
    results = json.loads((out / "results.json").read_text())
    arms = [a["name"] for a in results["arms"]]
    assert arms == ["real"] + [f"{m}@{s}" + x for m in GENERATORS for s, x in (("regime", ""), ("augmented", ""),
                                                                              ("augmented", "+select"))]  # fmt: skip
    assert {(r["arm"], r["regime"], r["draw"], r["seed"]) for r in results["runs"]} == {(a, 4, 0, 0) for a in arms}
    for run in results["runs"]:
        assert set(run["dice"]) == {"CSF", "GM", "WM", "mean"} and 0 <= run["dice"]["mean"] <= 1
    # MedDiff-FT fine-tunes the seg-guided generator of the same draw and filters with the draw's real-only
    # segmenter: it sees no other real data than the regime's N pairs
    gdir = out / "generators"
    mft = json.loads((gdir / "meddiff_ft" / "N004_d0" / "train" / "result.json").read_text())
    assert Path(mft["overrides"]["pretrained_path"]).parent == gdir / "seg_guided_diffusion" / "N004_d0" / "models"
    assert mft["overrides"]["datalist"] == gen_datalist_path(out) and mft["iterations"] == 2
    assert "num_real_pairs" in mft["overrides"] and mft["overrides"]["num_real_pairs"] is None
    # a warm start: Siamese-Diffusion trains its ControlNet and decoder on the same draw's seg-guided UNet
    sia = json.loads((gdir / "siamese_diffusion" / "N004_d0" / "train" / "result.json").read_text())
    assert Path(sia["overrides"]["pretrained_unet"]) == gdir / "seg_guided_diffusion" / "N004_d0" / "models" / (
        "model.safetensors"
    )
    assert sia["iterations"] == 2 and "num_real_pairs" not in sia["overrides"]
    assert "UNet initialised from" in r.stdout + r.stderr
    mft_sample = json.loads(
        (gdir / "meddiff_ft" / "N004_d0" / "sets" / "augmented" / "sample" / "result.json").read_text()
    )
    assert Path(mft_sample["overrides"]["segmenter_path"]) == out / "runs" / "real" / "N004_d0_s0" / "models"
    assert mft_sample["pairs"] == 8
    q = next(q for q in results["quality"] if q["set"] == "seg_guided_diffusion@regime")
    assert q["pairs"] == 8 and q["masks"] == 4 and np.isfinite(q["fid"]) and 0 <= q["ms_ssim"] <= 1
    # faithfulness' like-for-like reference: the judge's Dice on the real test slices at the generated size
    at_size = results["judge"]["real_vs_real"]["test_dice_at_size"]
    assert set(at_size) == {"CSF", "GM", "WM", "mean"} and 0 <= at_size["mean"] <= 1
    size = "x".join(map(str, results["judge"]["real_vs_real"]["image_size"]))
    assert f"| real test slices at {size} (judge's Dice) | pool |" in report
    # fairness: the generator trained on the regime datalist only; the regime set's masks are the regime's, the
    # augmented set's masks were made from them only; same budget for every arm
    regime = json.loads((out / "draws" / "N004_d0" / "datalist.json").read_text())
    regime_labels = {e["label"] for e in regime["training"]}
    gen = json.loads((gdir / "seg_guided_diffusion" / "N004_d0" / "train" / "result.json").read_text())
    gen_datalist = json.loads(Path(gen["overrides"]["datalist"]).read_text())
    assert Path(gen["overrides"]["datalist"]).parent == out / "draws" / "N004_d0"
    assert {e["image"] for e in gen_datalist["training"]} == {e["image"] for e in regime["training"]}
    assert gen["iterations"] == 2
    sets = gdir / "seg_guided_diffusion" / "N004_d0" / "sets"
    synth = json.loads((sets / "regime" / "synthetic" / "datalist.json").read_text())
    assert {e["source_mask"] for e in synth["training"]} == regime_labels
    masks = json.loads((sets / "augmented" / "synthetic" / "masks" / "datalist.json").read_text())["training"]
    assert len(masks) == 8 and {m["source_mask"] for m in masks} <= regime_labels
    sel = json.loads((sets / "augmented" / "select" / "result.json").read_text())
    assert sel["kept"] == 4 and sel["total"] == 8  # half of the filtered pairs, by the regime segmenter's loss
    runs = [
        json.loads((out / "runs" / a / "N004_d0_s0" / "train" / "result.json").read_text())
        for a in ("real", "seg_guided_diffusion@augmented", "seg_guided_diffusion@augmented+select")
    ]
    assert {r["overrides"]["num_iterations"] for r in runs} == {4} and {r["overrides"]["seed"] for r in runs} == {0}
    assert runs[0]["overrides"]["synthetic_datalist"] is None and runs[1]["overrides"]["synthetic_ratio"] == 0.5
    assert "synthetic_until" not in runs[0]["overrides"] and runs[1]["overrides"]["synthetic_until"] == 0.5
    assert "in the first 50% of the iterations, the rest real only" in report
    assert runs[2]["overrides"]["synthetic_datalist"] == str(sets / "augmented" / "select" / "datalist.json")
    # an interrupted evaluation resumes: finished runs are not redone
    os.remove(out / "runs" / "seg_guided_diffusion@regime" / "N004_d0_s0" / "test" / "result.json")
    before = (out / "runs" / "real" / "N004_d0_s0" / "test" / "result.json").stat().st_mtime_ns
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert r.stdout.count("finished in") == 1 and r.stdout.count("done already") >= 2 * len(arms)
    assert (out / "runs" / "real" / "N004_d0_s0" / "test" / "result.json").stat().st_mtime_ns == before
    assert json.loads((out / "results.json").read_text())["runs"] == results["runs"]
    # resumed with other settings: the runs made with the old ones are redone, nothing else
    gen_before = (gdir / "seg_guided_diffusion" / "N004_d0" / "train" / "result.json").read_text()
    r = subprocess.run([c for c in cmd if c not in ("--synthetic_until", "0.5")], capture_output=True, text=True,
                       timeout=900, env=env, cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    mixed = len(arms) - 1
    assert r.stdout.count("made with other settings or inputs, redoing") == 2 * mixed  # train + test of each
    assert (out / "runs" / "real" / "N004_d0_s0" / "test" / "result.json").stat().st_mtime_ns == before
    assert (gdir / "seg_guided_diffusion" / "N004_d0" / "train" / "result.json").read_text() == gen_before
    again = json.loads((out / "runs" / arms[1] / "N004_d0_s0" / "train" / "result.json").read_text())
    assert "synthetic_until" not in again["overrides"] and again["key"]["settings"]["synthetic_until"] == 1.0


def gen_datalist_path(out: Path) -> str:
    return str(out / "draws" / "N004_d0" / "generator_datalist.json")
