"""The Siamese-Diffusion bundle end to end on tiny settings: ConfigWorkflow training (all four loss terms logged),
mask-only sampling with guidance, a UNet initialised from the segmentation-guided bundle, resume, DDP, metadata."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import nibabel as nib
import pytest
import torch
from conftest import BUNDLES
from monai.bundle import ConfigWorkflow

from monai_siamese.cli import run_bundle
from monai_siamese.networks import load_state_dict_file

BUNDLE = BUNDLES / "siamese_diffusion"
NET = {
    "spatial_size": [32, 32],
    "unet_def#channels": [8, 16],
    "unet_def#attention_levels": [False, False],
    "unet_def#num_res_blocks": 1,
    "unet_def#num_head_channels": 8,
    "unet_def#norm_num_groups": 8,
    "hint_channels": [8],
}
TINY = {
    **NET,
    "batch_size": 4,
    "num_workers": 0,
    "epoch_length": 2,
    "num_iterations": 4,  # online augmentation from global step 2 (> 4/3): iterations 3 and 4
    "checkpoint_interval": 2,
    "sample_interval": 2,
    "sample_steps": 2,
    "max_train_slices": 8,
    "log_interval": 1,  # a TensorBoard point per iteration
    "warmup_steps": 1,
    "ema_warmup_iters": 2,
}


def _dirs(tmp_path, demo_dir, name=""):
    return {
        "dataset_dir": demo_dir,
        "ckpt_dir": str(tmp_path / name / "models"),
        "log_dir": str(tmp_path / name / "logs"),
        "sample_dir": str(tmp_path / name / "samples"),
    }


def _scalars(log_dir) -> dict[str, list[float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {tag: [e.value for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_train_then_sample_writes_nifti_pairs(tmp_path, demo_dir):
    run_bundle(BUNDLE, ["train.json"], "training", "train", {**TINY, **_dirs(tmp_path, demo_dir)})
    models = tmp_path / "models"
    assert (models / "checkpoint_final.pt").is_file() and (models / "checkpoint_iteration=2.pt").is_file()
    assert (tmp_path / "samples" / "latest.png").is_file() and (tmp_path / "samples" / "iter_0000002.png").is_file()
    keys = load_state_dict_file(models / "model.safetensors")
    assert any(k.startswith("unet.") for k in keys) and any(k.startswith("controlnet.") for k in keys)
    scalars = _scalars(tmp_path / "logs")
    for tag in ("loss", "loss_mask", "loss_img", "loss_nc", "loss_oa", "image_weight"):
        assert len(scalars[tag]) == 4, tag
    assert scalars["image_weight"] == pytest.approx([0, 0.25, 0.5, 0.75])
    assert scalars["loss_oa"][:2] == [0.0, 0.0]  # before a third of training

    infer = {
        **NET,
        "dataset_dir": demo_dir,
        "ckpt_dir": str(models),
        "output_dir": str(tmp_path / "synthetic"),
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
    assert manifest["method"] == "siamese_diffusion" and manifest["counts"]["pairs_total"] == 6
    for e in datalist:
        assert e["synthetic"] is True and e["method"] == "siamese_diffusion" and e["guidance_scale"] == 2.0
        img, lab = nib.load(str(out / e["image"])), nib.load(str(out / e["label"]))
        assert img.shape == lab.shape == (32, 32)
        assert torch.isfinite(torch.as_tensor(img.get_fdata())).all()
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "images").iterdir()}
    run_bundle(BUNDLE, ["inference.json"], "inference", "infer", infer)  # a rerun resumes: nothing rewritten
    assert {p: p.stat().st_mtime_ns for p in (out / "images").iterdir()} == mtimes


def test_unet_from_seg_guided_checkpoint(tmp_path, demo_dir):
    """The segmentation-guided UNet (image + mask input channels) initialises the UNet and the ControlNet; with a
    pretrained UNet the default mode trains the decoder only, so the encoder stays as loaded."""
    seg = {k.replace("unet_def#", "network_def#"): v for k, v in TINY.items() if k != "hint_channels"}
    run_bundle(
        BUNDLES / "seg_guided_diffusion",
        ["train.json"],
        "training",
        "train",
        {**seg, **_dirs(tmp_path, demo_dir, "seg"), "num_iterations": 2, "sample_interval": 0},
    )
    pretrained = tmp_path / "seg" / "models" / "model.safetensors"
    wf = ConfigWorkflow(
        config_file=str(BUNDLE / "configs" / "train.json"),
        meta_file=str(BUNDLE / "configs" / "metadata.json"),
        logging_file=False,
        workflow_type="train",
        run_id="training",
        bundle_root=str(BUNDLE),
        **{
            **TINY,
            **_dirs(tmp_path, demo_dir, "sd"),
            "num_iterations": 2,
            "sample_interval": 0,
            "pretrained_unet": str(pretrained),
        },
    )
    wf.initialize()
    assert wf.parser.get_parsed_content("unet_mode") == "decoder"
    src = load_state_dict_file(pretrained)
    net = wf.parser.get_parsed_content("network")
    cn = net.controlnet.state_dict()
    torch.testing.assert_close(cn["conv_in.conv.weight"], src["conv_in.conv.weight"][:, :1], rtol=0, atol=0)
    torch.testing.assert_close(
        cn["down_blocks.1.resnets.0.conv1.conv.weight"],
        src["down_blocks.1.resnets.0.conv1.conv.weight"],
        rtol=0,
        atol=0,
    )
    wf.run()
    trained = load_state_dict_file(tmp_path / "sd" / "models" / "checkpoint_final.pt", "network")
    for k, v in src.items():
        if k.startswith(("down_blocks", "middle_block", "time_embed")):
            torch.testing.assert_close(trained[f"unet.{k}"], v, rtol=0, atol=0)
    assert any(not torch.equal(trained[f"unet.{k}"], v) for k, v in src.items() if k.startswith("up_blocks"))


def _workflow(tmp_path, demo_dir, **extra):
    return ConfigWorkflow(
        config_file=str(BUNDLE / "configs" / "train.json"),
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
    assert sorted(p.name for p in (tmp_path / "models").glob("checkpoint_iteration=*.pt")) == [
        "checkpoint_iteration=2.pt"
    ]
    wf2 = _workflow(tmp_path, demo_dir)
    wf2.initialize()
    trainer2 = wf2.parser.get_parsed_content("train#trainer")
    seen = []
    trainer2.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(e.state.output["image_weight"]))
    wf2.run()
    assert wf2.parser.get_parsed_content("train#resume_handler").loaded_from.endswith("checkpoint_iteration=2.pt")
    assert trainer2.state.iteration == 6 and len(seen) == 4
    assert seen == pytest.approx([2 / 6, 3 / 6, 4 / 6, 5 / 6])  # the w_i ramp continues where it stopped


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
    r = subprocess.run(args, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert (tmp_path / "models" / "checkpoint_iteration=4.pt").is_file()
    assert (tmp_path / "models" / "model.safetensors").is_file()


def test_bad_datalist_fails_before_training(tmp_path, demo_dir):
    bad = {"training": [{"image": "nope.nii.gz", "label": "nope_label.nii.gz"}], "validation": []}
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    from monai_siamese.data import DataValidationError

    over = {**TINY, **_dirs(tmp_path, demo_dir), "datalist": str(tmp_path / "bad.json"), "dataset_dir": str(tmp_path)}
    with pytest.raises(Exception) as info:
        run_bundle(BUNDLE, ["train.json"], "training", "train", over)
    err = info.value
    while err is not None and not isinstance(err, DataValidationError):
        err = err.__cause__ or err.__context__
    assert isinstance(err, DataValidationError) and "nope.nii.gz: file not found" in str(err)
    assert not (tmp_path / "models").exists()
