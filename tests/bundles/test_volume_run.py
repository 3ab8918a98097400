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


def _crop(tmp_path, demo_volume_dir, split: str, key: str) -> str:
    path = load_datalist(f"{demo_volume_dir}/datalist.json", split, entry_key="label")[0][key]
    src = nib.load(path)
    nib.save(nib.Nifti1Image(np.asarray(src.dataobj)[:, :, 60:72], src.affine), str(tmp_path / f"{key}.nii.gz"))
    return str(tmp_path / f"{key}.nii.gz")


@pytest.mark.parametrize("bundle", ["siamese_diffusion", "meddiff_ft"])
def test_every_generator_makes_consistent_volumes(tmp_path, demo_volume_dir, context_model, bundle):
    """context.json trains the 2.5D condition in the other two generators too (MedDiff-FT fine-tunes the 2.5D
    seg-guided model, its extra known-image channel zero-initialised); their volume runs keep the label's grid, and
    MedDiff-FT keeps its canvas outside the editable region (up to training's intensity clipping)."""
    ckpt = tmp_path / "models"
    over = {"dataset_dir": demo_volume_dir, "ckpt_dir": str(ckpt), "log_dir": str(tmp_path / "logs"),
            "sample_dir": str(tmp_path / "samples"), "sample_interval": 0}  # fmt: skip
    if bundle == "meddiff_ft":
        over["pretrained_path"] = f"{context_model}/model.safetensors"
    run_bundle(bundle, ["train.json", "tiny.json", "context.json"], "training", "train", over)
    label = _crop(tmp_path, demo_volume_dir, "training", "label")
    image = _crop(tmp_path, demo_volume_dir, "training", "image")
    extra = ["--image", image] if bundle == "meddiff_ft" else []
    cmd = [sys.executable, "-m", "monai_siamese", "volume", "--bundle", bundle, "--out", str(tmp_path / "out"),
           "--configs", "tiny.json,context.json", "--ckpt_dir", str(ckpt), "--label", label, *extra]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    entry = json.loads((tmp_path / "out" / "datalist.json").read_text())["training"][0]
    img = nib.load(str(tmp_path / "out" / entry["image"]))
    lab = nib.load(label)
    assert img.shape == lab.shape and np.allclose(img.affine, lab.affine, atol=1e-6)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["method"] == bundle and manifest["config"]["context_slices"] == 1
    assert manifest["config"]["mode"] == "consistent"
    # MONAI Label's synthesis for a 3D image takes the same volume run (MedDiff-FT: the request's image is the canvas)
    from monai_siamese.bundles import bundle_path
    from monai_siamese.monailabel_app import core

    configs = ["inference.json", "tiny.json", "context.json"]
    result = core.synthesize(bundle_path(bundle), image, label, tmp_path / "ml.nii.gz", configs=configs,
                             overrides={"ckpt_dir": str(ckpt)}, work_dir=tmp_path)  # fmt: skip
    assert result["volume"] is True and nib.load(str(tmp_path / "ml.nii.gz")).shape == lab.shape
    if bundle == "meddiff_ft":
        from scipy import ndimage

        lo, hi = entry["intensity_range"]
        far = ~ndimage.binary_dilation(np.asarray(lab.dataobj) > 0, iterations=16)
        canvas = np.clip(nib.load(image).get_fdata(), lo, hi)
        assert far.sum() > 1000
        np.testing.assert_allclose(img.get_fdata()[far], canvas[far], atol=1e-3)
        # without a canvas, or with one off the label's grid: one line naming the file, nothing generated
        flat = tmp_path / "flat.nii.gz"
        nib.save(nib.Nifti1Image(np.zeros((16, 16, 12), np.float32), lab.affine), str(flat))
        for args, name in ((["--label", label], "label.nii.gz"), (["--label", label, "--image", str(flat)], "flat")):
            bad = cmd[: cmd.index("--label")] + args
            bad[bad.index("--out") + 1] = str(tmp_path / f"bad_{name}")
            r = subprocess.run(bad, capture_output=True, text=True, timeout=900)
            lines = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
            assert r.returncode == 1 and len(lines) == 1 and name in lines[0], r.stderr[-2000:]
            assert not list((tmp_path / f"bad_{name}").glob("images/*"))
