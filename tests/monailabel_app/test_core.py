"""The monailabel-free part of the MONAI Label app: 2D slices as the bundles write them (RAS slicing, resize, pad)
pasted back onto the source grid, one-slice label copies, the datastore guard. No server, no training."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.transforms import apply_transform

from monai_siamese.data import pair_load_transform
from monai_siamese.data.pipeline import fit_slice_transform
from monai_siamese.data.slicing import iter_slices
from monai_siamese.monailabel_app import core


def _volume(path_img, path_lab, affine, shape=(20, 24, 6)):
    rng = np.random.default_rng(0)
    lab = np.zeros(shape, np.uint8)
    lab[4:14, 5:20, :] = 1
    lab[7:11, 8:16, 1:5] = 2
    img = (lab * 40 + rng.normal(0, 1, shape) + 100).astype(np.float32)
    nib.save(nib.Nifti1Image(img, affine), str(path_img))
    nib.save(nib.Nifti1Image(lab, affine), str(path_lab))
    return img, lab


AFFINES = {
    "ras": np.diag([1.5, 1.5, 3.0, 1.0]),
    # slices on the file's first axis, in-plane flips, an origin
    "permuted": np.array([[0, 0, -1.5, 20.0], [0, -1.5, 0, 30.0], [3.0, 0, 0, -10.0], [0, 0, 0, 1]]),
}


@pytest.mark.parametrize("orientation", list(AFFINES))
@pytest.mark.parametrize("size", [12, 48])
def test_paste_slices_undoes_orientation_resize_and_pad(tmp_path, orientation, size):
    img_p, lab_p = tmp_path / "img.nii.gz", tmp_path / "lab.nii.gz"
    _, lab = _volume(img_p, lab_p, AFFINES[orientation])
    loaded = apply_transform(pair_load_transform(3, preset="minmax"), {"image": str(img_p), "label": str(lab_p)})
    fit = fit_slice_transform(size)
    parts = []
    for s in iter_slices(loaded, axis=2, min_foreground=1):
        s = apply_transform(fit, s)
        parts.append((s["label"][0].numpy(), s["label"].affine.numpy()))
    back, affine = core.paste_slices(lab_p, parts, fill=0, order=0, dtype=np.uint8)
    assert back.shape == lab.shape and np.allclose(affine, AFFINES[orientation])
    agree = (back == lab).mean()
    # 48: the 24-pixel side upsampled exactly 2x, so nearest-neighbour resampling back is exact; 12: halved, lossy
    assert agree == 1.0 if size == 48 else agree > 0.85, agree


def test_paste_slices_2d_and_fill(tmp_path):
    aff = np.diag([0.5, 0.5, 1.0, 1.0])
    nib.save(nib.Nifti1Image(np.zeros((8, 6), np.float32), aff), str(tmp_path / "ref.nii.gz"))
    # a 4 x 3 image at twice the spacing covers the same field of view (centres shifted by half a source pixel)
    gen_aff = np.diag([1.0, 1.0, 1.0, 1.0])
    gen_aff[:2, 3] = 0.25
    gen = np.arange(12, dtype=np.float32).reshape(4, 3)
    out, _ = core.paste_slices(tmp_path / "ref.nii.gz", [(gen, gen_aff)], order=0)
    assert out.shape == (8, 6) and np.array_equal(out[::2, ::2], gen)
    empty, _ = core.paste_slices(tmp_path / "ref.nii.gz", [], fill=-3.0)
    assert (empty == -3.0).all()


def test_masked_label_and_datastore_guard(tmp_path):
    img_p, lab_p = tmp_path / "img.nii.gz", tmp_path / "lab.nii.gz"
    _, lab = _volume(img_p, lab_p, AFFINES["permuted"])
    out = nib.load(core.masked_label(lab_p, 2, 2, tmp_path / "one.nii.gz"))
    data = np.asarray(out.dataobj)
    # RAS axis 2 is the file's first axis, not flipped: slice 2 is file index 2
    assert np.allclose(out.affine, AFFINES["permuted"]) and np.array_equal(data[2], lab[2]) and not data[[0, 1]].any()
    with pytest.raises(ValueError, match="outside"):
        core.masked_label(lab_p, 40, 2, tmp_path / "bad.nii.gz")
    with pytest.raises(ValueError, match="inside the datastore"):
        core.check_outside(tmp_path / "store" / "pairs", tmp_path / "store")
    core.check_outside(tmp_path / "pairs", tmp_path / "store")
