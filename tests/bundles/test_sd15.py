"""The ``sd15.json`` / ``sd15_inference.json`` overrides of the three generator bundles on a tiny random Stable
Diffusion folder written by the test (diffusers layout, loaded back through the real loading code): one training step
with a 2-step sample grid, then 2-step generation written as NIfTI with the source geometry; and the errors for a
missing or incomplete ``pretrained_path``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import torch
from helpers import BUNDLES, REPO, bundle_workflow
from sd_tiny import make_tiny_stable_diffusion

from monai_siamese.bundles import config_files
from monai_siamese.networks import PretrainedModelError, load_state_dict_file

TINY = {
    "spatial_size": [32, 32],
    "batch_size": 2,
    "num_workers": 0,
    "epoch_length": 1,
    "num_iterations": 1,
    "checkpoint_interval": 1,
    "sample_interval": 1,
    "sample_steps": 2,
    "sample_masks": 2,
    "max_train_slices": 4,
    "warmup_steps": 1,
    "ema_warmup_iters": 1,
    "weight_dtype": "fp32",
    "gradient_checkpointing": True,
    "attention_slice": 2,
    "prompt": "an mri slice",
}
INFER = {"spatial_size": [32, 32], "num_inference_steps": 2, "batch_size": 2, "weight_dtype": "fp32"}


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    return str(make_tiny_stable_diffusion(tmp_path_factory.mktemp("sd") / "tiny-sd"))


@pytest.fixture(scope="module")
def tiny_sd_inpaint(tmp_path_factory):
    return str(make_tiny_stable_diffusion(tmp_path_factory.mktemp("sdi") / "tiny-sd-inpainting", inpainting=True))


def _workflow(bundle, configs, run_id, wtype, overrides):
    return bundle_workflow(BUNDLES / bundle, configs, run_id, wtype, initialize=False, **overrides)


def _train(bundle, tmp_path, demo_dir, pretrained, **extra):
    dirs = {k: str(tmp_path / k) for k in ("ckpt_dir", "log_dir", "sample_dir")}
    wf = _workflow(
        bundle,
        ["train.json", "sd15.json"],
        "training",
        "train",
        {**TINY, **dirs, "dataset_dir": demo_dir, "pretrained_path": pretrained, **extra},
    )
    wf.initialize()
    wf.run()
    trainer = wf.parser.get_parsed_content("train#trainer")
    assert trainer.state.iteration == 1 and np.isfinite(float(trainer.state.output["loss"]))
    assert (tmp_path / "sample_dir" / "latest.png").is_file()  # the 2-step latent sample grid
    assert (tmp_path / "ckpt_dir" / "model.safetensors").is_file()
    wf.finalize()
    return wf


def _generate(bundle, tmp_path, demo_dir, pretrained, **extra):
    out = tmp_path / "synthetic"
    wf = _workflow(
        bundle,
        ["inference.json", "sd15_inference.json"],
        "inference",
        "infer",
        {
            **INFER,
            "dataset_dir": demo_dir,
            "ckpt_dir": str(tmp_path / "ckpt_dir"),
            "output_dir": str(out),
            "pretrained_path": pretrained,
            **extra,
        },
    )
    wf.initialize()
    wf.run()
    datalist = json.loads((out / "datalist.json").read_text())["training"]
    assert datalist
    dataset = wf.parser.get_parsed_content("dataset")
    affines = {}
    for i in range(len(dataset)):
        it = dataset[i]
        affines[(str(it["source_label"]), int(it["slice_index"]))] = np.asarray(it["label"].affine)
    for e in datalist:
        img, lab = nib.load(str(out / e["image"])), nib.load(str(out / e["label"]))
        assert img.shape == lab.shape == (32, 32)  # decoded from the 16 x 16 latent back to the slice's size
        assert np.isfinite(img.get_fdata()).all()
        src = affines[(e["source_mask"], int(e["slice_index"]))]
        np.testing.assert_allclose(img.affine[:2, :2], src[:2, :2], atol=1e-5)  # the slice's geometry is kept
        np.testing.assert_allclose(img.affine[:3, 3], src[:3, 3], atol=1e-4)
        np.testing.assert_allclose(img.affine, lab.affine)
    return datalist


def test_siamese_sd15_controlnet(tmp_path, demo_dir, tiny_sd):
    wf = _train("siamese_diffusion", tmp_path, demo_dir, tiny_sd)
    net = wf.parser.get_parsed_content("network")
    assert type(net).__name__ == "DiffusersSiameseNetwork" and type(net.controlnet.controlnet).__name__ == (
        "ControlNetModel"
    )
    assert net.unet.unet.is_gradient_checkpointing
    out = wf.parser.get_parsed_content("train#trainer").state.output
    assert all(k in out for k in ("loss_mask", "loss_img", "loss_nc", "loss_oa"))
    keys = load_state_dict_file(tmp_path / "ckpt_dir" / "model.safetensors")
    assert "unet.prompt_embeds" in keys and any(k.startswith("controlnet.controlnet.") for k in keys)
    _generate("siamese_diffusion", tmp_path, demo_dir, tiny_sd, max_masks=2, samples_per_mask=1, prompt="an mri slice")


def test_meddiff_sd15_inpainting(tmp_path, demo_dir, tiny_sd_inpaint):
    wf = _train("meddiff_ft", tmp_path, demo_dir, tiny_sd_inpaint, num_real_pairs=2)
    net = wf.parser.get_parsed_content("network")
    # 4 latent + 1 region + 4 masked-image latent (SD inpainting) + 4 one-hot mask channels
    assert net.unet.config.in_channels == 13 and net.in_channels == 13
    datalist = _generate(
        "meddiff_ft",
        tmp_path,
        demo_dir,
        tiny_sd_inpaint,
        num_real_pairs=2,
        num_pairs=2,
        max_samples_per_canvas=2,
        use_quality_filter=False,
    )
    assert len(datalist) == 2


@pytest.mark.parametrize("objective", ["ddpm", "rflow"])
def test_seg_guided_sd15_concat(tmp_path, demo_dir, tiny_sd, objective):
    """Concat conditioning on a Stable Diffusion UNet; ``objective: rflow`` fine-tunes it as a rectified flow (the
    noise process and the Euler sampler replace the folder's DDPM scheduler, in training and sampling alike)."""
    from monai.networks.schedulers import RFlowScheduler

    wf = _train("seg_guided_diffusion", tmp_path, demo_dir, tiny_sd, objective=objective)
    assert wf.parser.get_parsed_content("network").in_channels == 4 + 4
    assert isinstance(wf.parser.get_parsed_content("noise_scheduler"), RFlowScheduler) == (objective == "rflow")
    over = {"sampler": "euler"} if objective == "rflow" else {}
    _generate("seg_guided_diffusion", tmp_path, demo_dir, tiny_sd, max_masks=2, samples_per_mask=1, objective=objective,
              **over)  # fmt: skip


def _cause(err: BaseException) -> BaseException | None:
    while err is not None and not isinstance(err, PretrainedModelError):
        err = err.__cause__ or err.__context__
    return err


def test_missing_or_incomplete_pretrained_path(tmp_path, demo_dir, tiny_sd):
    over = {**TINY, "dataset_dir": demo_dir, "ckpt_dir": str(tmp_path / "m")}
    with pytest.raises(Exception) as info:  # MONAI's config parser wraps the error: its cause is ours
        _workflow("siamese_diffusion", ["train.json", "sd15.json"], "training", "train", over).initialize()
    assert "pretrained_path is not set" in str(_cause(info.value))
    broken = tmp_path / "broken-sd"
    shutil.copytree(tiny_sd, broken)
    shutil.rmtree(broken / "vae")
    (broken / "scheduler" / "scheduler_config.json").unlink()
    (broken / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    wf = _workflow(
        "meddiff_ft", ["train.json", "sd15.json"], "training", "train", {**over, "pretrained_path": str(broken)}
    )
    with pytest.raises(Exception) as info:
        wf.initialize()
    msg = str(_cause(info.value))
    assert str(broken) in msg and "vae/ (folder missing)" in msg and "scheduler/scheduler_config.json" in msg
    assert "unet/ has no weights file" in msg and "text_encoder" not in msg.split("Expected")[0]
    assert not (tmp_path / "m").exists()

    # the documented command fails in seconds with the same message
    cfg = str(config_files(BUNDLES / "siamese_diffusion", ["train.json", "sd15.json"]))
    args = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", cfg]
    args += ["--pretrained_path", str(tmp_path / "nowhere"), "--dataset_dir", demo_dir]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    r = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode != 0
    assert f"pretrained_path {tmp_path / 'nowhere'}: folder not found" in r.stderr + r.stdout


def test_bf16_weights_and_memory_options(tiny_sd):
    from monai_siamese.networks import StableDiffusionComponents

    sd = StableDiffusionComponents(tiny_sd, weight_dtype="bf16", gradient_checkpointing=True, attention_slice="max")
    codec = sd.codec(1, "pixel")
    assert codec.dtype == torch.bfloat16
    x = torch.rand(1, 1, 32, 32) * 2 - 1
    z = codec.encode(x)
    assert z.dtype == torch.float32 and z.shape == (1, 4, 16, 16)
    assert codec.decode(z).shape == (1, 1, 32, 32)
    unet = sd.unet()
    assert next(unet.parameters()).dtype == torch.float32  # trainable weights stay float32 (AMP does the rest)
    assert unet.unet.is_gradient_checkpointing
