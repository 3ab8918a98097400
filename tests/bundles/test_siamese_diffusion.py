"""What only the Siamese-Diffusion bundle does (the shared workflow, resume, DDP and bad-data checks are in
``test_workflows.py``): the loss terms and schedule logged per iteration, both networks exported, guided sampling,
and initialisation from a segmentation-guided UNet."""

from __future__ import annotations

import json

import nibabel as nib
import pytest
import torch
from helpers import bundle_workflow

from monai_siamese.bundles import bundle_path, run_bundle
from monai_siamese.networks import load_state_dict_file

BUNDLE = bundle_path("siamese_diffusion")
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


def test_loss_terms_schedule_and_guided_sampling(tmp_path, demo_dir):
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


def test_unet_from_seg_guided_checkpoint(tmp_path, demo_dir):
    """The segmentation-guided UNet (image + mask input channels) initialises the UNet and the ControlNet; with a
    pretrained UNet the default mode trains the decoder only, so the encoder stays as loaded."""
    seg = {k.replace("unet_def#", "network_def#"): v for k, v in TINY.items() if k != "hint_channels"}
    run_bundle(
        "seg_guided_diffusion",
        ["train.json"],
        "training",
        "train",
        {**seg, **_dirs(tmp_path, demo_dir, "seg"), "num_iterations": 2, "sample_interval": 0},
    )
    pretrained = tmp_path / "seg" / "models" / "model.safetensors"
    wf = bundle_workflow(
        BUNDLE,
        ["train.json"],
        **{
            **TINY,
            **_dirs(tmp_path, demo_dir, "sd"),
            "num_iterations": 2,
            "sample_interval": 0,
            "pretrained_unet": str(pretrained),
        },
    )
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


def test_rectified_flow_trains_and_samples(tmp_path, demo_dir):
    """``objective: rflow`` (MONAI's RFlowScheduler, which never runs nn.Module.__init__ and so cannot sit in the
    network's module tree) trains both branches with online augmentation and samples with the weights' settings."""
    from monai.networks.schedulers import RFlowScheduler

    run_bundle(BUNDLE, ["train.json"], "training", "train", {**TINY, **_dirs(tmp_path, demo_dir), "objective": "rflow"})
    scalars = _scalars(tmp_path / "logs")
    assert all(torch.isfinite(torch.tensor(scalars[t])).all() for t in ("loss", "loss_nc", "loss_oa"))
    assert scalars["loss_oa"][-1] > 0  # the online-augmentation term ran on the flow's x0 estimate
    wf = bundle_workflow(BUNDLE, ["train.json"], **{**TINY, **_dirs(tmp_path, demo_dir, "check"), "objective": "rflow"})
    net = wf.parser.get_parsed_content("network")
    assert isinstance(net.scheduler, RFlowScheduler) and "scheduler" not in dict(net.named_children())
    # `compile: true` traces the network, scheduler included (dynamo reads the state of every nn.Module it meets:
    # RFlowScheduler's is given one), rather than falling back to eager with a warning
    import warnings

    from monai_siamese.engines import compile_network
    from monai_siamese.inferers.siamese import make_image_hint

    compiled = compile_network(net, backend="eager")
    x0 = torch.rand(2, 1, 32, 32) * 2 - 1
    cond = torch.nn.functional.one_hot(torch.randint(0, 4, (2, 32, 32)), 4).permute(0, 3, 1, 2).float()
    t = torch.tensor([100, 900])
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        out = compiled(x0, torch.randn_like(x0), t, cond, make_image_hint(x0, 4), 0.5, torch.tensor([True, False]))
    assert compiled.is_compiled and torch.isfinite(out["pred_oa"]).all()
    infer = {
        **NET,
        "dataset_dir": demo_dir,
        "ckpt_dir": str(tmp_path / "models"),
        "output_dir": str(tmp_path / "synthetic"),
        "max_masks": 2,
        "samples_per_mask": 1,
        "num_inference_steps": 2,
        "objective": "rflow",  # as the weights were trained (a disagreeing config stops with a WeightsError)
        "sampler": "euler",
    }
    run_bundle(BUNDLE, ["inference.json"], "inference", "infer", infer)
    datalist = json.loads((tmp_path / "synthetic" / "datalist.json").read_text())["training"]
    assert len(datalist) == 2
    img = nib.load(str(tmp_path / "synthetic" / datalist[0]["image"]))
    assert torch.isfinite(torch.as_tensor(img.get_fdata())).all()
