"""Every bundle through the same workflow check (``monai_siamese.testing.check_workflow``): training, a real
``python -m monai.bundle run`` subprocess killed with SIGKILL after two checkpoints, the newest checkpoint truncated,
a resumed run that must end bit-identical to an uninterrupted one, then inference; plus the contract every generator
bundle must keep (MONAI properties file), DDP on two CPU processes and bad data failing before training."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
from helpers import BUNDLES

from monai_siamese.bundles import (
    GENERATORS,
    REGISTRY,
    SEGMENTATION,
    base_of,
    config_files,
    discover_generators,
    folder_overrides,
    generator_properties_path,
    missing_properties,
    run_bundle,
)
from monai_siamese.data import load_datalist
from monai_siamese.errors import WeightsError, find_input_error
from monai_siamese.testing import bundle_command, check_workflow

ALL_BUNDLES = [*GENERATORS, SEGMENTATION]


@pytest.fixture(scope="module")
def base_weights(tmp_path_factory, demo_dir) -> str:
    """Tiny segmentation-guided weights, the base model that MedDiff-FT fine-tunes."""
    root = tmp_path_factory.mktemp("base")
    over = {"dataset_dir": demo_dir, **folder_overrides(root)}
    run_bundle("seg_guided_diffusion", ["train.json", "tiny.json"], "training", "train", {**over, "sample_interval": 0})
    return str(root / "models" / "model.safetensors")


def _overrides(bundle: str, demo_dir: str, base_weights: str | None) -> dict:
    over = {"dataset_dir": demo_dir}
    if base_of(bundle) is not None:
        over["pretrained_path"] = base_weights
    return over


#: MedDiff-FT's quality filter rejects every sample of a 10-iteration model (its own test checks the filter)
INFER = {"meddiff_ft": {"use_quality_filter": False}}


def test_registry_lists_every_bundle_folder():
    folders = sorted(p.name for p in BUNDLES.iterdir() if (p / "configs").is_dir())
    assert sorted(REGISTRY) == folders
    assert discover_generators(BUNDLES) == list(GENERATORS)
    for name in folders:  # every train.json / inference.json is a delta over common.json: no value repeated
        configs = BUNDLES / name / "configs"
        common = json.loads((configs / "common.json").read_text())
        for delta in ("train.json", "inference.json"):
            d = json.loads((configs / delta).read_text())
            same = [k for k in d if k in common and d[k] == common[k]]
            assert not same, f"{name}/{delta} repeats {same} of common.json"
        t, i = (json.loads((configs / f).read_text()) for f in ("train.json", "inference.json"))
        assert not [k for k in t if k in i and t[k] == i[k] and k not in ("run",)], name


@pytest.mark.parametrize("bundle", GENERATORS)
def test_generator_bundles_define_the_required_properties(bundle, tmp_path):
    """The contract of a generator bundle is data (bundles/generator_properties.json, a MONAI properties file):
    every generator defines each of its ids in its train and inference configs."""
    assert missing_properties(bundle, "train") == []
    assert missing_properties(bundle, "infer") == []
    props = json.loads(generator_properties_path().read_text())
    assert {"dataset_dir", "ckpt_dir", "trained_with", "trainer"} <= set(props["train"])
    assert {"output_dir", "mask_split", "samples_per_mask", "sampler"} <= set(props["infer"])
    # a bundle that lacks an id is reported by name
    configs = tmp_path / "gen_x" / "configs"
    configs.mkdir(parents=True)
    for name in ("train.json", "inference.json", "metadata.json"):
        (configs / name).write_text((BUNDLES / bundle / "configs" / name).read_text())
    (configs / "common.json").write_text(json.dumps({"num_classes": 4}))
    assert "dataset_dir" in missing_properties(tmp_path / "gen_x", "train")


@pytest.mark.parametrize("bundle", ALL_BUNDLES)
def test_kill_resume_is_exact_then_inference(bundle, tmp_path, demo_dir, base_weights):
    with pytest.warns(RuntimeWarning, match="unreadable checkpoint"):
        result = check_workflow(
            bundle, tmp_path, _overrides(bundle, demo_dir, base_weights), infer_overrides=INFER.get(bundle)
        )
    # the kill left checkpoints 2 and 4; 4 was truncated, so the run resumed from 2 and still ends identical
    assert result["skipped"] == [result["killed_checkpoints"][0]]
    assert result["resumed_from"] == result["killed_checkpoints"][1]
    assert result["max_abs_diff"] == 0.0
    out = tmp_path / "infer"
    if bundle == SEGMENTATION:
        test = load_datalist(os.path.join(demo_dir, "datalist.json"), "test")
        preds = sorted(out.glob("*_seg.nii.gz"))
        assert len(preds) == len(test)
        src = nib.load(test[0]["label"])
        pred = nib.load(str(preds[0]))
        # predicted at 32 x 32, inverted back onto the source slice's 128 x 128 grid and geometry
        assert pred.shape == src.shape and np.allclose(pred.affine, src.affine, atol=1e-4)
        assert set(np.unique(pred.get_fdata())) <= {0, 1, 2, 3}
        return
    datalist = json.loads((out / "datalist.json").read_text())["training"]
    assert datalist and all(e["synthetic"] is True and e["method"] == bundle for e in datalist)
    for e in datalist:
        img, lab = nib.load(str(out / e["image"])), nib.load(str(out / e["label"]))
        assert img.shape == lab.shape == (32, 32)
        # a 128 x 128 slice at 1.5 mm fitted to 32 x 32: 6 mm pixels over the same field of view
        np.testing.assert_allclose(img.header.get_zooms(), (6.0, 6.0), rtol=1e-5)
        assert np.isfinite(img.get_fdata()).all() and set(np.unique(lab.get_fdata())) <= {0, 1, 2, 3}
        assert (out / e["preview"]).is_file()
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "images").iterdir()}  # a rerun resumes: nothing rewritten
    run_bundle(
        bundle,
        ["inference.json", "tiny.json"],
        "inference",
        "infer",
        {
            **_overrides(bundle, demo_dir, base_weights),
            "ckpt_dir": str(tmp_path / "killed" / "models"),
            "output_dir": str(out),
            **INFER.get(bundle, {}),
        },
    )
    assert {p: p.stat().st_mtime_ns for p in (out / "images").iterdir()} == mtimes


@pytest.mark.parametrize("bundle", GENERATORS)
def test_sampling_config_that_disagrees_with_training_fails_in_one_line(bundle, tmp_path, demo_dir, base_weights):
    """Weights carry their training settings: plain ``inference.json`` (256 x 256, reference network, epsilon) on
    tiny v-prediction weights names every disagreeing key instead of sampling wrong images."""
    over = {**_overrides(bundle, demo_dir, base_weights), "prediction_type": "v_prediction", "sample_interval": 0}
    run_bundle(bundle, ["train.json", "tiny.json"], "training", "train", {**over, **folder_overrides(tmp_path / "m")})
    infer = {
        **_overrides(bundle, demo_dir, base_weights),
        "ckpt_dir": str(tmp_path / "m" / "models"),
        "output_dir": str(tmp_path),
    }
    cmd = bundle_command(bundle, ["inference.json"], "inference", infer, tmp_path / "args.json")
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=str(tmp_path))
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    for key in ("spatial_size", "prediction", "network#channels"):
        assert key in lines[0]
    assert not (tmp_path / "images").exists()
    # same channels but another prediction type: still refused, never silently sampled
    infer_tiny = {**infer, "output_dir": str(tmp_path / "out")}
    with pytest.raises(Exception) as info:
        run_bundle(bundle, ["inference.json", "tiny.json"], "inference", "infer", infer_tiny)
    error = find_input_error(info.value)
    assert isinstance(error, WeightsError) and "prediction (config " in str(error)
    assert "spatial_size" not in str(error)  # only what disagrees is named


@pytest.mark.parametrize("bundle", ["seg_guided_diffusion", "siamese_diffusion"])  # segmentation: its own test
def test_ddp_two_cpu_processes(bundle, tmp_path, demo_dir):
    files = config_files(BUNDLES / bundle, ["train.json", "tiny.json", "multi_gpu_train.json"])
    args = {"dataset_dir": demo_dir, "ckpt_dir": str(tmp_path / "models"), "log_dir": str(tmp_path / "logs")}
    if bundle != SEGMENTATION:
        args.update(sample_dir=str(tmp_path / "samples"), sample_interval=0)
    (tmp_path / "args.json").write_text(json.dumps(args))
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "monai.bundle", "run", "training", "--config_file", str(files),
        "--meta_file", str(BUNDLES / bundle / "configs" / "metadata.json"), "--args_file", str(tmp_path / "args.json"),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "models" / "checkpoint_final.pt").is_file()


@pytest.mark.parametrize("bundle", ALL_BUNDLES)
def test_bad_datalist_fails_before_training(bundle, tmp_path, demo_dir):
    bad = {"training": [{"image": "missing.nii.gz", "label": "missing_label.nii.gz"}], "num_classes": 4}
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    over = {"datalist": str(tmp_path / "bad.json"), "dataset_dir": str(tmp_path), "ckpt_dir": str(tmp_path / "m")}
    cmd = bundle_command(bundle, ["train.json", "tiny.json"], "training", over, tmp_path / "args.json")
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=str(tmp_path))
    assert proc.returncode == 1
    assert "error: " in proc.stderr and "missing.nii.gz: file not found" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "m").exists() or not list((tmp_path / "m").iterdir())
