"""What only the segmentation-guided bundle does (the shared workflow, resume, DDP and bad-data checks are in
``test_workflows.py``): the reference's single-channel mask encoding with per-batch ablation, guidance at sampling,
and training on fewer slices than a batch."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np

from monai_siamese.bundles import run_bundle
from monai_siamese.evaluation.steps import trained_iterations

BUNDLE = "seg_guided_diffusion"


def _dirs(tmp_path, demo_dir):
    return {
        "dataset_dir": demo_dir,
        "ckpt_dir": str(tmp_path / "models"),
        "log_dir": str(tmp_path / "logs"),
        "sample_dir": str(tmp_path / "samples"),
    }


def test_faithful_encoding_batch_ablation_and_guided_sampling(tmp_path, demo_dir):
    over = {**_dirs(tmp_path, demo_dir), "mask_encoding": "faithful", "ablation_mode": "batch"}
    run_bundle(BUNDLE, ["train.json", "tiny.json"], "training", "train", over)
    assert (tmp_path / "samples" / "latest.png").is_file() and (tmp_path / "samples" / "iter_0000002.png").is_file()
    assert list((tmp_path / "logs").glob("events.out.tfevents*"))
    infer = {
        "dataset_dir": demo_dir,
        "ckpt_dir": str(tmp_path / "models"),
        "output_dir": str(tmp_path / "synthetic"),
        "mask_encoding": "faithful",
        "samples_per_mask": 2,
        "guidance_scale": 2.0,
    }
    run_bundle(BUNDLE, ["inference.json", "tiny.json"], "inference", "infer", infer)
    out = tmp_path / "synthetic"
    datalist = json.loads((out / "datalist.json").read_text())["training"]
    assert len(datalist) == 6  # 3 masks x 2 samples
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["pairs_total"] == 6 and manifest["config"]["mask_encoding"] == "faithful"
    for e in datalist:
        src = nib.load(e["source_mask"])
        img = nib.load(str(out / e["image"]))
        np.testing.assert_allclose(img.affine[:3, 3], src.affine[:3, 3] + [2.25, 2.25, 0.0], atol=1e-4)


def test_fewer_slices_than_the_batch_still_trains(tmp_path, demo_dir):
    """2 training slices and a batch of 4: the endless batch stream fills every batch, so the run takes every step."""
    over = {**_dirs(tmp_path, demo_dir), "max_train_slices": 2, "sample_interval": 0}
    run_bundle(BUNDLE, ["train.json", "tiny.json"], "training", "train", over)
    assert trained_iterations(tmp_path / "models" / "checkpoint_final.pt") == 4
