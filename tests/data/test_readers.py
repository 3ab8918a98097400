"""Reading real pixels: the MNI152 volume as NIfTI and as a DICOM series gives the same array and spacing."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import write_dicom_series, write_nifti, write_png
from monai.transforms import LoadImaged

from monai_siamese.data import pair_load_transform


@pytest.fixture(scope="module")
def mni_int16(mni_t1):
    vol = np.round(mni_t1.get_fdata() * 1000).astype(np.int16)
    return vol[:, :, 30:46], mni_t1.affine.copy()  # 16 slices keep the DICOM series small


def test_nifti_and_dicom_series_read_the_same(tmp_path, mni_int16):
    vol, affine = mni_int16
    # the slab starts at z = 30: shift the affine's origin accordingly
    affine = affine.copy()
    affine[:3, 3] = (affine @ np.array([0, 0, 30, 1.0]))[:3]
    nii = write_nifti(tmp_path / "mni.nii.gz", vol, affine)
    dcm = write_dicom_series(tmp_path / "dicom", vol, affine)
    load = LoadImaged(["nii", "dcm"], image_only=True, ensure_channel_first=True)
    d = load({"nii": nii, "dcm": dcm})
    a, b = d["nii"].numpy(), d["dcm"].numpy()
    assert a.shape == b.shape == (1, *vol.shape)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(d["nii"].affine.numpy(), d["dcm"].affine.numpy(), atol=1e-4)
    spacing_nii = np.linalg.norm(d["nii"].affine.numpy()[:3, :3], axis=0)
    spacing_dcm = np.linalg.norm(d["dcm"].affine.numpy()[:3, :3], axis=0)
    np.testing.assert_allclose(spacing_nii, [2.0, 2.0, 2.0])
    np.testing.assert_allclose(spacing_dcm, spacing_nii, atol=1e-5)


def test_pair_load_transform_reads_nifti_dicom_and_png(tmp_path, mni_int16):
    vol, affine = mni_int16
    label = (vol > 500).astype(np.uint8)
    dcm = write_dicom_series(tmp_path / "img", vol, affine)
    lab = write_nifti(tmp_path / "lab.nii.gz", label, affine)
    out = pair_load_transform(num_classes=2, preset="mr")({"image": dcm, "label": lab})
    assert out["image"].shape == out["label"].shape == (1, *vol.shape)
    assert -1.0 <= float(out["image"].min()) and float(out["image"].max()) <= 1.0
    assert set(np.unique(out["label"].numpy())) == {0, 1}
    # a 2D PNG pair with a 0/255 mask
    img2d = (np.linspace(0, 255, 40 * 30).reshape(40, 30)).astype(np.uint8)
    msk2d = np.zeros((40, 30), np.uint8)
    msk2d[10:20, 5:15] = 255
    d = pair_load_transform(num_classes=2, preset="grey")(
        {"image": write_png(tmp_path / "i.png", img2d), "label": write_png(tmp_path / "m.png", msk2d)}
    )
    assert d["image"].shape == (1, 40, 30) and d["label"].shape == (1, 40, 30)
    np.testing.assert_array_equal(d["label"][0].numpy(), (msk2d == 255).astype(np.int64))
    np.testing.assert_allclose(d["image"][0].numpy(), img2d / 127.5 - 1.0, atol=1e-5)
