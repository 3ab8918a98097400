"""The MNI152 demo data: 4 classes, split by slab, T1 contrast on real pixels."""

from __future__ import annotations

import json

import numpy as np
from monai.transforms import LoadImage

from monai_siamese.data import load_datalist


def test_demo_split_by_slab(demo_dir):
    content = json.loads(open(f"{demo_dir}/datalist.json").read())
    assert content["num_classes"] == 4 and content["labels"]["3"] == "WM"
    z = {k: [e["slice_index"] for e in content[k]] for k in ("training", "validation", "test")}
    assert z["test"] == list(range(74, 99))
    pool = z["training"] + z["validation"]
    assert not set(pool) & set(range(61, 112)), "gap or test slab slices in the pool"
    assert len(z["validation"]) >= 4 and len(z["training"]) >= 50
    assert not set(z["training"]) & set(z["validation"])


def test_demo_pixels_and_labels(demo_dir):
    load = LoadImage(image_only=True)
    entries = load_datalist(f"{demo_dir}/datalist.json", "test")
    means = {1: [], 2: [], 3: []}
    for e in entries[::6]:
        img, lab = load(e["image"]), load(e["label"])
        assert img.shape == lab.shape == (128, 128)
        np.testing.assert_allclose(np.linalg.norm(img.affine[:3, :2].numpy(), axis=0), [1.5, 1.5])
        assert set(np.unique(lab.numpy())) <= {0, 1, 2, 3}
        assert int((lab == 3).sum()) > 200
        for c in means:
            means[c].append(float(img[lab == c].mean()))
    csf, gm, wm = (np.mean(means[c]) for c in (1, 2, 3))
    assert wm > gm > csf  # T1 contrast


def test_demo_volume_matches_the_2d_demo(demo_dir, demo_volume_dir):
    import nibabel as nib

    content = json.loads(open(f"{demo_volume_dir}/datalist.json").read())
    assert content["num_classes"] == 4 and content["labels"]["3"] == "WM" and content["slice_axis"] == 2
    (pair,) = load_datalist(f"{demo_volume_dir}/datalist.json", "training")
    img, lab = nib.load(pair["image"]), nib.load(pair["label"])
    assert img.shape == lab.shape == (128, 128, 189)
    np.testing.assert_allclose(np.linalg.norm(img.affine[:3, :3], axis=0), [1.5, 1.5, 1.0])
    np.testing.assert_array_equal(img.affine, lab.affine)
    assert set(np.unique(np.asarray(lab.dataobj))) == {0, 1, 2, 3}
    # slice z of the volume is the 2D demo's slice z (pixels, label and geometry)
    load = LoadImage(image_only=True)
    entry = load_datalist(f"{demo_dir}/datalist.json", "test")[0]
    z = entry["slice_index"]
    np.testing.assert_allclose(np.asarray(img.dataobj)[:, :, z], load(entry["image"]).numpy(), atol=1e-6)
    np.testing.assert_array_equal(np.asarray(lab.dataobj)[:, :, z], load(entry["label"]).numpy())
    np.testing.assert_allclose(img.affine[:3, 3] + img.affine[:3, 2] * z, load(entry["image"]).affine[:3, 3].numpy())
    assert content["masks"] == [{"label": "labels/mni152_label.nii.gz"}]
