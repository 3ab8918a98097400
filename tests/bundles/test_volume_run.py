"""Whole synthetic volumes through the bundle: a 2.5D model trained with ``context.json`` on the 3D demo volume,
then ``python -m monai_siamese volume`` (the bundle's ``volume`` run) on a label volume: the written volume has the
label's affine and shape exactly; bad labels stop with one line naming the file."""

from __future__ import annotations

import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from monai_siamese.bundles import run_bundle
from monai_siamese.data import load_datalist


@pytest.fixture(scope="module")
def context_model(tmp_path_factory, demo_volume_dir) -> str:
    root = tmp_path_factory.mktemp("ctx")
    over = {"dataset_dir": demo_volume_dir, "ckpt_dir": str(root / "models"), "log_dir": str(root / "logs"),
            "sample_dir": str(root / "samples"), "sample_interval": 0}  # fmt: skip
    run_bundle("seg_guided_diffusion", ["train.json", "tiny.json", "context.json"], "training", "train", over)
    return str(root / "models")


def _volume(tmp_path, labels, ckpt_dir):
    cmd = [sys.executable, "-m", "monai_siamese", "volume", "--bundle", "seg_guided_diffusion", "--out",
           str(tmp_path / "out"), "--configs", "tiny.json,context.json", "--ckpt_dir", ckpt_dir, "--label", *labels]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900)


def test_volume_command_writes_the_label_grid(tmp_path, demo_volume_dir, context_model):
    label = load_datalist(f"{demo_volume_dir}/datalist.json", "masks", entry_key="label")[0]["label"]
    src = nib.load(label)
    crop = nib.Nifti1Image(np.asarray(src.dataobj)[:, :, 60:72], src.affine)  # 12 slices keep the test short
    nib.save(crop, str(tmp_path / "label.nii.gz"))
    r = _volume(tmp_path, [str(tmp_path / "label.nii.gz")], context_model)
    assert r.returncode == 0, r.stderr[-3000:]
    out = tmp_path / "out"
    entries = json.loads((out / "datalist.json").read_text())["training"]
    assert len(entries) == 1 and entries[0]["synthetic"] is True
    img, lab = nib.load(str(out / entries[0]["image"])), nib.load(str(out / entries[0]["label"]))
    assert img.shape == lab.shape == crop.shape
    np.testing.assert_allclose(img.affine, crop.affine, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(lab.dataobj), np.asarray(crop.dataobj))
    assert np.isfinite(img.get_fdata()).all()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["method"] == "seg_guided_diffusion"


def test_volume_command_refuses_2d_and_unknown_classes(tmp_path, context_model):
    nib.save(nib.Nifti1Image(np.ones((16, 16), np.uint8), np.eye(4)), str(tmp_path / "flat.nii.gz"))
    bad = np.zeros((16, 16, 4), np.uint8)
    bad[4:8, 4:8] = 7
    nib.save(nib.Nifti1Image(bad, np.eye(4)), str(tmp_path / "seven.nii.gz"))
    for name in ("flat.nii.gz", "seven.nii.gz"):
        r = _volume(tmp_path / name.split(".")[0], [str(tmp_path / name)], context_model)
        lines = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
        assert r.returncode == 1 and len(lines) == 1 and name in lines[0], r.stderr[-2000:]
        assert "Traceback" not in r.stderr
