"""3D -> 2D slicing keeps geometry (world coordinates) and provenance."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from helpers import write_nifti
from monai.data import MetaTensor

from monai_siamese.data import (
    SliceDataset,
    SyntheticPairWriter,
    fit_slice_transform,
    iter_slices,
    pair_load_transform,
    slice_affine,
)

AFFINE = np.array(
    [
        [0.0, -1.2, 0.1, 30.0],
        [0.9, 0.0, 0.0, -50.0],
        [0.0, 0.05, 2.5, 12.0],
        [0, 0, 0, 1.0],
    ]
)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_slice_affine_maps_pixels_to_the_volume_world_coordinates(axis):
    k = 3
    aff2d = slice_affine(AFFINE, axis, k).numpy()
    for i, j in [(0, 0), (4, 7), (9, 2)]:
        ijk = [i, j]
        ijk.insert(axis, k)
        expected = AFFINE @ np.array([*ijk, 1.0])
        np.testing.assert_allclose(aff2d @ np.array([i, j, 0, 1.0]), expected, atol=1e-9)


def test_iter_slices_filters_foreground_and_keeps_provenance():
    img = MetaTensor(torch.rand(1, 6, 5, 4), affine=torch.as_tensor(AFFINE))
    img.meta["filename_or_obj"] = "/data/case1/image.nii.gz"
    lab = torch.zeros(1, 6, 5, 4, dtype=torch.int64)
    lab[0, :2, :2, 1] = 1  # 4 px on z=1
    lab[0, :, :, 3] = 2  # 30 px on z=3
    lab = MetaTensor(lab, affine=torch.as_tensor(AFFINE))
    lab.meta["filename_or_obj"] = "/data/case1/label.nii.gz"
    slices = list(iter_slices({"image": img, "label": lab}, axis=2, min_foreground=5))
    assert [s["slice_index"] for s in slices] == [3]
    s = slices[0]
    assert s["source_image"] == "/data/case1/image.nii.gz" and s["source_label"] == "/data/case1/label.nii.gz"
    assert s["image"].shape == (1, 6, 5) and s["slice_axis"] == 2
    np.testing.assert_allclose(s["image"].affine.numpy(), slice_affine(AFFINE, 2, 3).numpy())
    torch.testing.assert_close(s["image"].as_tensor(), img[:, :, :, 3].as_tensor())
    # only WM-like class 1 counted: z=1 has 4 px
    only1 = list(iter_slices({"image": img, "label": lab}, axis=2, min_foreground=4, foreground_classes=[1]))
    assert [x["slice_index"] for x in only1] == [1]
    # fraction threshold: 30 px of 30 = 100 %
    frac = list(iter_slices({"image": img, "label": lab}, axis=2, min_foreground=0.9))
    assert [x["slice_index"] for x in frac] == [3]


def test_slice_dataset_to_written_nifti_keeps_real_geometry(tmp_path):
    """A volume with anisotropic spacing -> slices fitted to 16x16 -> written pair: same world position."""
    vol = np.random.default_rng(0).random((20, 12, 5)).astype(np.float32) * 100
    lab = np.zeros((20, 12, 5), np.uint8)
    lab[5:15, 3:9, 2] = 1
    img_p = write_nifti(tmp_path / "img.nii.gz", vol, AFFINE)
    lab_p = write_nifti(tmp_path / "lab.nii.gz", lab, AFFINE)
    ds = SliceDataset(
        [{"image": img_p, "label": lab_p}],
        load_transform=pair_load_transform(2, preset="ct", axcodes=None),
        axis=2,
        slice_transform=fit_slice_transform(16),
    )
    assert len(ds) == 1
    item = ds[0]
    assert item["image"].shape == (1, 16, 16) and item["slice_index"] == 2
    aff = item["image"].affine.numpy()
    # the centre of the slice is still where it was in the volume: resize + pad keep the field of view centre
    center_vox_src = np.array([(20 - 1) / 2, (12 - 1) / 2, 2, 1.0])
    center_world = AFFINE @ center_vox_src
    np.testing.assert_allclose(aff @ np.array([7.5, 7.5, 0, 1.0]), center_world, atol=1e-6)
    # pixel spacing scaled by 20 -> 16 along x (longest side)
    np.testing.assert_allclose(np.linalg.norm(aff[:3, 0]), 0.9 * 20 / 16, rtol=1e-6)
    w = SyntheticPairWriter(tmp_path / "out", method="test", num_classes=2)
    e = w.write("p0", item["image"], item["label"], item["label"].affine)
    written = nib.load(str(tmp_path / "out" / e["image"]))
    assert written.shape == (16, 16)
    np.testing.assert_allclose(written.affine, aff, atol=1e-5)
    np.testing.assert_allclose(written.header.get_zooms()[:2], np.linalg.norm(aff[:3, :2], axis=0), rtol=1e-5)


@pytest.mark.parametrize("shape", [(40, 24), (24, 40), (128, 128), (17, 9), (90, 200)])
def test_unfit_slices_is_the_inverse_of_the_fit_for_pairs_and_volumes(shape):
    """One inverse of fit_slice_transform: a smooth image fitted to 32 x 32 (longest side resized, padded) comes back
    onto its own grid (up- and downsampling, odd sizes); the pair writer's and the volume generator's paths agree."""
    from monai.data import MetaTensor

    from monai_siamese.data import fit_slice_transform, unfit_slices
    from monai_siamese.inferers import VolumeGenerator, to_source_grid

    h, w = shape
    ramp = (torch.linspace(-1, 1, h)[:, None] * torch.linspace(0.5, 1, w)[None]).clone()
    fitted = torch.as_tensor(fit_slice_transform(32)({"image": MetaTensor(ramp[None])})["image"])
    back = unfit_slices(fitted, shape)
    assert back.shape == (1, h, w)
    assert float((back - ramp)[:, 2:-2, 2:-2].abs().max()) < 0.03  # measured 2e-7 .. 0.025 (edges excluded)
    torch.testing.assert_close(to_source_grid(fitted, shape), back)
    gen = VolumeGenerator.__new__(VolumeGenerator)
    gen.keep_aspect = True
    torch.testing.assert_close(gen._unfit(fitted[None], h, w)[0], back)
