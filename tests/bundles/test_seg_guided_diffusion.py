"""The segmentation-guided bundle end to end on tiny settings: ConfigWorkflow training, sampling, resume, DDP,
metadata, and running from another folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
from conftest import BUNDLES
from monai.bundle import ConfigWorkflow

from monai_siamese.cli import run_bundle

BUNDLE = BUNDLES / "seg_guided_diffusion"
TINY = {
    "spatial_size": [32, 32],
    "network_def#channels": [8, 16],
    "network_def#attention_levels": [False, False],
    "network_def#num_res_blocks": 1,
    "network_def#num_head_channels": 8,
    "network_def#norm_num_groups": 8,
    "batch_size": 4,
    "num_workers": 0,
    "epoch_length": 2,
    "num_iterations": 4,
    "checkpoint_interval": 2,
    "sample_interval": 2,
    "sample_steps": 2,
    "max_train_slices": 8,
    "warmup_steps": 1,
    "ema_warmup_iters": 2,
}


def _dirs(tmp_path, demo_dir):
    return {
        "dataset_dir": demo_dir,
        "ckpt_dir": str(tmp_path / "models"),
        "log_dir": str(tmp_path / "logs"),
        "sample_dir": str(tmp_path / "samples"),
    }


@pytest.mark.parametrize("encoding,ablation", [("onehot", "sample"), ("faithful", "batch")])
def test_train_then_sample_writes_nifti_pairs(tmp_path, demo_dir, encoding, ablation):
    over = {**TINY, **_dirs(tmp_path, demo_dir), "mask_encoding": encoding, "ablation_mode": ablation}
    run_bundle(BUNDLE, ["train.json"], "training", "train", over)
    assert (tmp_path / "models" / "model.safetensors").is_file()
    assert (tmp_path / "models" / "checkpoint_final.pt").is_file()
    assert (tmp_path / "samples" / "latest.png").is_file() and (tmp_path / "samples" / "iter_0000002.png").is_file()
    assert list((tmp_path / "logs").glob("events.out.tfevents*"))

    infer = {
        **{k: v for k, v in TINY.items() if k.startswith("network_def") or k == "spatial_size"},
        "dataset_dir": demo_dir,
        "ckpt_dir": str(tmp_path / "models"),
        "output_dir": str(tmp_path / "synthetic"),
        "mask_encoding": encoding,
        "max_masks": 3,
        "samples_per_mask": 2,
        "num_inference_steps": 2,
        "guidance_scale": 2.0,
    }
    run_bundle(BUNDLE, ["inference.json"], "inference", "infer", infer)
    out = tmp_path / "synthetic"
    datalist = json.loads((out / "datalist.json").read_text())["training"]
    assert len(datalist) == 6
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["pairs_total"] == 6 and manifest["method"] == "seg_guided_diffusion"
    for e in datalist:
        assert e["synthetic"] is True and e["method"] == "seg_guided_diffusion" and "seed" in e
        img = nib.load(str(out / e["image"]))
        lab = nib.load(str(out / e["label"]))
        src = nib.load(e["source_mask"])
        assert img.shape == lab.shape == (32, 32)
        # the source slice is 128 x 128 at 1.5 mm: fitted to 32 x 32 the spacing is 6 mm, same field of view
        np.testing.assert_allclose(img.header.get_zooms(), (6.0, 6.0), rtol=1e-5)
        np.testing.assert_allclose(img.affine[:3, 3], src.affine[:3, 3] + [2.25, 2.25, 0.0], atol=1e-4)
        assert np.isfinite(img.get_fdata()).all()
        assert set(np.unique(lab.get_fdata())) <= {0, 1, 2, 3}
        assert (out / e["preview"]).is_file()
    # a rerun resumes: nothing is rewritten
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "images").iterdir()}
    run_bundle(BUNDLE, ["inference.json"], "inference", "infer", infer)
    assert {p: p.stat().st_mtime_ns for p in (out / "images").iterdir()} == mtimes
    assert json.loads((out / "manifest.json").read_text())["counts"]["skipped_existing"] == 6


def _workflow(tmp_path, demo_dir, **extra):
    files = [str(BUNDLE / "configs" / "train.json")]
    return ConfigWorkflow(
        config_file=files,
        meta_file=str(BUNDLE / "configs" / "metadata.json"),
        logging_file=False,
        workflow_type="train",
        run_id="training",
        bundle_root=str(BUNDLE),
        **{**TINY, **_dirs(tmp_path, demo_dir), "num_iterations": 6, "sample_interval": 0, **extra},
    )


def test_interrupted_training_resumes_from_saved_iteration(tmp_path, demo_dir):
    from ignite.engine import Events

    wf = _workflow(tmp_path, demo_dir)
    wf.initialize()
    trainer = wf.parser.get_parsed_content("train#trainer")

    @trainer.on(Events.ITERATION_COMPLETED(once=3))
    def _crash(engine):
        raise KeyboardInterrupt("simulated interruption")

    with pytest.raises(BaseException, match="simulated interruption"):
        wf.run()
    ckpts = sorted(p.name for p in (tmp_path / "models").glob("checkpoint_iteration=*.pt"))
    assert ckpts == ["checkpoint_iteration=2.pt"]

    wf2 = _workflow(tmp_path, demo_dir)
    wf2.initialize()
    trainer2 = wf2.parser.get_parsed_content("train#trainer")
    seen = []
    trainer2.add_event_handler(Events.ITERATION_STARTED, lambda e: seen.append(e.state.iteration))
    wf2.run()
    resume = wf2.parser.get_parsed_content("train#resume_handler")
    assert resume.loaded_from.endswith("checkpoint_iteration=2.pt")
    assert seen[0] == 3 and trainer2.state.iteration == 6  # continued, not restarted
    assert (tmp_path / "models" / "checkpoint_iteration=6.pt").is_file()


def test_ddp_two_cpu_processes(tmp_path, demo_dir):
    cfg = [str(BUNDLE / "configs" / f) for f in ("train.json", "multi_gpu_train.json")]
    args = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "monai.bundle",
        "run",
        "training",
        "--config_file",
        str(cfg),
    ]
    over = {**TINY, **_dirs(tmp_path, demo_dir), "sample_interval": 0, "bundle_root": str(BUNDLE)}
    for k, v in over.items():
        args += [f"--{k}", json.dumps(v) if not isinstance(v, str) else v]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert (tmp_path / "models" / "checkpoint_iteration=4.pt").is_file()
    assert (tmp_path / "models" / "model.safetensors").is_file()


def test_cli_run_from_another_folder(tmp_path, demo_dir):
    """``python -m monai.bundle run training --config_file <path>`` from an unrelated working directory."""
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    args = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "training",
        "--config_file",
        str(BUNDLE / "configs" / "train.json"),
    ]
    over = {**TINY, **_dirs(tmp_path, demo_dir), "num_iterations": 2, "sample_interval": 0}
    for k, v in over.items():
        args += [f"--{k}", json.dumps(v) if not isinstance(v, str) else v]
    r = subprocess.run(args, capture_output=True, text=True, cwd=cwd, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert (tmp_path / "models" / "model.safetensors").is_file()
    assert not list(cwd.iterdir())  # nothing written into the working directory


def test_bad_datalist_fails_before_training(tmp_path, demo_dir):
    bad = {"training": [{"image": "nope.nii.gz", "label": "nope_label.nii.gz"}], "validation": []}
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    from monai_siamese.data import DataValidationError

    with pytest.raises(Exception) as info:
        run_bundle(
            BUNDLE,
            ["train.json"],
            "training",
            "train",
            {**TINY, **_dirs(tmp_path, demo_dir), "datalist": str(tmp_path / "bad.json"), "dataset_dir": str(tmp_path)},
        )
    err = info.value
    while err is not None and not isinstance(err, DataValidationError):
        err = err.__cause__ or err.__context__
    assert isinstance(err, DataValidationError), info.value
    assert "nope.nii.gz: file not found" in str(err) and "nope_label.nii.gz: file not found" in str(err)
    assert not (tmp_path / "models").exists()


def test_fewer_slices_than_the_batch_still_trains(tmp_path, demo_dir):
    """With 2 training slices and a batch of 4, drop_last would leave no batch at all (ignite then "completes"
    without a single step); the loader keeps the incomplete batch instead."""
    from monai_siamese.evaluation.steps import trained_iterations

    run_bundle(
        BUNDLE,
        ["train.json"],
        "training",
        "train",
        {**TINY, **_dirs(tmp_path, demo_dir), "max_train_slices": 2, "sample_interval": 0},
    )
    assert trained_iterations(tmp_path / "models" / "checkpoint_final.pt") == TINY["num_iterations"]
