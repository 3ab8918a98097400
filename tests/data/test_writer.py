"""The synthetic pair writer: layout, atomic writes, resume without overwriting, rejections."""

from __future__ import annotations

import json
import os

import nibabel as nib
import numpy as np
import pytest
import torch

from monai_siamese.data import SyntheticPairWriter, load_datalist, pair_name
from monai_siamese.utils import atomic_path


def test_pair_names_are_deterministic_and_unique():
    assert pair_name("/a/case1/label.nii.gz", 12, 3) == "label_z0012_003"
    assert pair_name("/a/case1/label.nii.gz", 12, 3, mask_index=0) != pair_name("/a/case2/label.nii.gz", 12, 3, 1)
    assert pair_name("m.png", -1, 0) == "m_000"


def test_write_layout_datalist_and_manifest(tmp_path):
    w = SyntheticPairWriter(tmp_path, method="unit", num_classes=3, config={"k": 1})
    aff = np.diag([0.5, 0.7, 2.0, 1.0])
    img = torch.rand(1, 10, 12) * 100
    lab = torch.zeros(1, 10, 12, dtype=torch.long)
    lab[0, 2:5, 3:7] = 2
    e = w.write("a_000", img, lab, aff, record={"seed": 5, "source_mask": "/x/m.nii.gz"})
    assert e["synthetic"] and e["seed"] == 5 and e["method"] == "unit"
    nimg = nib.load(str(tmp_path / e["image"]))
    np.testing.assert_allclose(nimg.get_fdata(), img[0].numpy(), rtol=1e-6)
    np.testing.assert_allclose(nimg.affine, aff)
    assert nib.load(str(tmp_path / e["label"])).get_data_dtype() == np.uint8
    assert (tmp_path / e["preview"]).is_file()
    paths = w.finalize({"counts": {"requested": 1}})
    entries = load_datalist(paths["datalist"], "training")
    assert entries[0]["image"] == str((tmp_path / e["image"]).resolve())
    manifest = json.loads(open(paths["manifest"]).read())
    assert manifest["counts"] == {
        "pairs_total": 1,
        "written_this_run": 1,
        "skipped_existing": 0,
        "rejected_by_reason": {},
        "requested": 1,
    }
    assert manifest["config"] == {"k": 1} and "monai" in manifest["versions"]


def test_rerun_skips_done_pairs_and_remembers_rejections(tmp_path):
    w = SyntheticPairWriter(tmp_path, method="unit", num_classes=2, previews=False)
    lab = torch.ones(1, 4, 4, dtype=torch.long)
    w.write("p0", torch.zeros(1, 4, 4), lab, None)
    w.reject("p1", "faithfulness_dice")
    before = (tmp_path / "images" / "p0.nii.gz").stat().st_mtime_ns
    w2 = SyntheticPairWriter(tmp_path, method="unit", num_classes=2, previews=False)
    assert w2.done("p0") and not w2.done("p1") and w2.is_rejected("p1")
    w2.write("p0", torch.ones(1, 4, 4), lab, None)
    assert (tmp_path / "images" / "p0.nii.gz").stat().st_mtime_ns == before
    assert w2.skipped == 1 and w2.written == 0
    assert w2.rejections() == {"faithfulness_dice": 1}


def test_rgb_images_are_written_as_png(tmp_path):
    from PIL import Image

    w = SyntheticPairWriter(tmp_path, method="unit", num_classes=2, previews=False)
    img = torch.zeros(3, 6, 4)
    img[0] = 255
    e = w.write("rgb", img, torch.zeros(1, 6, 4, dtype=torch.long), None)
    arr = np.asarray(Image.open(tmp_path / e["image"]))
    assert arr.shape == (4, 6, 3) and arr[..., 0].min() == 255 and arr[..., 1].max() == 0


def test_atomic_path_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "x.json"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            open(tmp, "w").write("partial")
            raise RuntimeError("interrupted")
    assert not target.exists() and os.listdir(tmp_path) == []
