"""MONAI-native latent diffusion for users without Stable Diffusion weights: ``latent.json`` trains MONAI's
``AutoencoderKL`` (run id ``train_autoencoder``), then the segmentation-guided model in its latent space, and
``latent_inference.json`` samples latents and writes decoded NIfTI pairs."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from helpers import BUNDLES, bundle_workflow

from monai_siamese.networks import load_state_dict_file

BUNDLE = BUNDLES / "seg_guided_diffusion"
NET = {
    "spatial_size": [32, 32],
    "autoencoder_def#channels": [8, 16],
    "autoencoder_def#num_res_blocks": 1,
    "autoencoder_def#norm_num_groups": 8,
    "network_def#channels": [8, 16],
    "network_def#attention_levels": [False, False],
    "network_def#num_res_blocks": 1,
    "network_def#num_head_channels": 8,
    "network_def#norm_num_groups": 8,
}
TRAIN = {
    **NET,
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
    "autoencoder_iterations": 3,
}


def _wf(configs, run_id, wtype, overrides):
    return bundle_workflow(BUNDLE, configs, run_id, wtype, **overrides)


def test_autoencoder_then_latent_training_and_sampling(tmp_path, demo_dir):
    dirs = {k: str(tmp_path / k) for k in ("ckpt_dir", "log_dir", "sample_dir")}
    over = {**TRAIN, **dirs, "dataset_dir": demo_dir}
    with pytest.raises(Exception) as info:  # no autoencoder yet: the error says how to train one
        _wf(["train.json", "latent.json"], "training", "train", over).run()
    err, msgs = info.value, []
    while err is not None:
        msgs.append(str(err))
        err = err.__cause__ or err.__context__
    assert any("autoencoder weights" in m and "train_autoencoder" in m for m in msgs)

    _wf(["train.json", "latent.json"], "train_autoencoder", "train", over).run()
    state = load_state_dict_file(tmp_path / "ckpt_dir" / "autoencoder.safetensors")
    assert "scale" in state and float(state["scale"]) > 0 and any(k.startswith("autoencoder.") for k in state)

    wf = _wf(["train.json", "latent.json"], "training", "train", over)
    wf.run()
    codec = wf.parser.get_parsed_content("codec")
    assert codec.factor == 2 and codec.latent_channels == 3 and float(codec.scale) == float(state["scale"])
    assert wf.parser.get_parsed_content("network").in_channels == 3 + 4
    assert (tmp_path / "sample_dir" / "latest.png").is_file()

    out = tmp_path / "synthetic"
    inf = _wf(
        ["inference.json", "latent_inference.json"],
        "inference",
        "infer",
        {
            **NET,
            "dataset_dir": demo_dir,
            "ckpt_dir": dirs["ckpt_dir"],
            "output_dir": str(out),
            "max_masks": 2,
            "num_inference_steps": 2,
        },
    )
    inf.run()
    datalist = json.loads((out / "datalist.json").read_text())["training"]
    assert len(datalist) == 2
    for e in datalist:
        img = nib.load(str(out / e["image"]))
        assert img.shape == (32, 32) and np.isfinite(img.get_fdata()).all()
