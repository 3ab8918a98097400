"""The monailabel-independent part of the app: bundle runs on one file, slices pasted back into the source geometry
(a reoriented 3D volume and a 2D slice), batch generation outside the datastore."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import BUNDLES, GENERATOR_TINY, make_volume

from monai_siamese.bundles import run_bundle
from monai_siamese.monailabel_app import core
from monai_siamese.testing import check_workflow

BUNDLE = BUNDLES / "seg_guided_diffusion"
NET = {k: v for k, v in GENERATOR_TINY.items() if k.startswith("network_def") or k == "spatial_size"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, demo_dir) -> Path:
    ckpt = tmp_path_factory.mktemp("core") / "models"
    over = {**GENERATOR_TINY, "num_iterations": 3, "dataset_dir": demo_dir, "ckpt_dir": str(ckpt)}
    over.pop("num_inference_steps")
    over.update({"log_dir": str(ckpt.parent / "logs"), "sample_dir": str(ckpt.parent / "samples")})
    run_bundle(BUNDLE, ["train.json"], "run", "train", over)
    return ckpt


def _labels_back(work: Path, reference: Path) -> np.ndarray:
    """The labels the bundle wrote (at 32 x 32, resized and padded slices) pasted back onto the reference grid."""
    pairs = work / "pairs"
    parts = []
    for e in json.loads((pairs / "datalist.json").read_text())["training"]:
        img = nib.load(str(pairs / e["label"]))
        parts.append((np.asarray(img.dataobj), img.affine))
    return core.paste_slices(reference, parts, fill=255, order=0, dtype=np.uint8)[0]


def test_shared_workflow_check_in_this_environment(tmp_path, demo_dir, monkeypatch):
    """The bundle workflow check of the main suite (kill -9, truncated checkpoint, exact resume, inference), here
    under the MONAI Label environment's torch.

    One CPU thread in both processes: with this environment's torch (2.14.1) and two threads, the resumed run ends
    max |dw| ~5e-6 away from the uninterrupted one, although two uninterrupted runs (in-process or in a subprocess)
    are bit-identical and the resumed run is too with one thread: the restored state is the same, the reduction
    order of some multi-threaded kernel on the reloaded tensors is not. The main suite (torch 2.13) checks it with
    two threads."""
    import torch

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.warns(RuntimeWarning, match="unreadable checkpoint"):
            result = check_workflow(BUNDLE, tmp_path, {"dataset_dir": demo_dir})
    finally:
        torch.set_num_threads(threads)
    assert result["max_abs_diff"] == 0.0 and result["resumed_from"] == result["killed_checkpoints"][1]


def test_synthesize_3d_is_one_volume_on_the_label_grid(tmp_path, demo_dir, trained):
    image, label = tmp_path / "vol.nii.gz", tmp_path / "vol_label.nii.gz"
    make_volume(demo_dir, image, label)
    out = tmp_path / "synthetic.nii.gz"
    over = {**NET, "ckpt_dir": str(trained), "num_inference_steps": 2}
    result = core.synthesize(BUNDLE, str(image), str(label), out, seed=0, overrides=over, work_dir=tmp_path)
    src, syn = nib.load(str(image)), nib.load(str(out))
    assert result["volume"] is True and syn.shape == src.shape and np.allclose(syn.affine, src.affine)
    assert np.isfinite(syn.get_fdata()).all()


@pytest.mark.parametrize("volume", [False, True], ids=["2d", "3d_reoriented_one_slice"])
def test_synthesize_pastes_back_into_source_geometry(tmp_path, demo_dir, trained, volume):
    if volume:
        image, label = tmp_path / "vol.nii.gz", tmp_path / "vol_label.nii.gz"
        make_volume(demo_dir, image, label)
    else:
        e = json.loads((Path(demo_dir) / "datalist.json").read_text())["training"][5]
        image, label = Path(demo_dir) / e["image"], Path(demo_dir) / e["label"]
    out = tmp_path / "synthetic.nii.gz"
    over = {**NET, "ckpt_dir": str(trained), "num_inference_steps": 2}
    result = core.synthesize(
        BUNDLE, str(image), str(label), out, seed=0, slice_index=3 if volume else None, overrides=over,
        work_dir=tmp_path, keep_work=True,
    )  # fmt: skip
    src, syn = nib.load(str(image)), nib.load(str(out))
    assert syn.shape == src.shape and np.allclose(syn.affine, src.affine)
    assert result["pairs"] == 1
    # the labels written by the bundle, put back with the same geometry, match the source label (32 -> 128 nearest)
    back = _labels_back(next(tmp_path.glob("synth_*")), image)
    ref = np.asarray(nib.load(str(label)).dataobj)
    done = back != 255  # the synthesised slice (the others keep the fill value)
    assert done.any() and (back[done] == ref[done]).mean() > 0.9


def test_masked_label_keeps_one_ras_slice(tmp_path, demo_dir):
    image, label = tmp_path / "vol.nii.gz", tmp_path / "vol_label.nii.gz"
    make_volume(demo_dir, image, label)
    out = core.masked_label(label, 3, 2, tmp_path / "one.nii.gz")
    data, src = np.asarray(nib.load(out).dataobj), np.asarray(nib.load(str(label)).dataobj)
    assert data.shape == src.shape and np.array_equal(data[3], src[3]) and not data[[0, 1, 2, 4]].any()
    with pytest.raises(ValueError, match="outside"):
        core.masked_label(label, 9, 2, tmp_path / "bad.nii.gz")


def test_generate_pairs_refuses_the_datastore(tmp_path, demo_dir, trained):
    e = json.loads((Path(demo_dir) / "datalist.json").read_text())["training"][:2]
    entries = [{"image": str(Path(demo_dir) / x["image"]), "label": str(Path(demo_dir) / x["label"])} for x in e]
    store = tmp_path / "studies"
    store.mkdir()
    with pytest.raises(ValueError, match="inside the datastore"):
        core.generate_pairs(BUNDLE, entries, store / "out", 2, datastore_dir=store)
    over = {**NET, "ckpt_dir": str(trained), "num_inference_steps": 2}
    res = core.generate_pairs(BUNDLE, entries, tmp_path / "pairs", 3, overrides=over, datastore_dir=store)
    assert res["pairs"] == 3 and json.loads(Path(res["manifest"]).read_text())["counts"]["pairs_total"] == 3
