"""Slice consistency: adjacent-slice NCC / SSIM inside the foreground, and the orthogonal-reformat figure."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import write_nifti
from PIL import Image

from monai_siamese.quality import adjacent_slice_similarity, consistency_gap, reformat_figure, volume_consistency


def _volumes(seed: int = 0):
    rng = np.random.default_rng(seed)
    lab = np.zeros((24, 20, 16), np.uint8)
    lab[4:20, 4:16, 2:14] = 1
    base = rng.normal(size=(24, 20))
    smooth = np.repeat(base[:, :, None], 16, axis=2) + 0.1 * rng.normal(size=(24, 20, 16))  # slices agree
    striped = rng.normal(size=(24, 20, 16))  # every slice its own texture
    return lab, smooth.astype(np.float32), striped.astype(np.float32)


@pytest.mark.parametrize("region", ["bbox", "mask"])
def test_consistent_volume_scores_higher_than_striped(region):
    lab, smooth, striped = _volumes()
    a = adjacent_slice_similarity(smooth, lab, axis=2, region=region)
    b = adjacent_slice_similarity(striped, lab, axis=2, region=region)
    assert a["pairs"] == b["pairs"] == 11  # slices 2..13 have foreground: pairs (2,3) ... (12,13)
    assert a["ncc"] > 0.95 and abs(b["ncc"]) < 0.2
    assert a["ssim"] > b["ssim"] + 0.3
    assert b["jitter"] > 5 * a["jitter"] and b["jitter_ratio"] > 5 * a["jitter_ratio"]  # stripes: through-plane jitter
    assert consistency_gap(a, b) == pytest.approx(a["ncc"] - b["ncc"])
    same = adjacent_slice_similarity(np.repeat(smooth[:, :, :1], 16, 2), lab)
    assert same["ncc"] == pytest.approx(1.0) and same["ssim"] == pytest.approx(1.0, abs=1e-4)


def test_pairs_need_foreground_and_units_do_not_matter():
    lab, smooth, _ = _volumes()
    a = adjacent_slice_similarity(smooth, lab, min_foreground=10_000, ssim=False)
    assert a["pairs"] == 0 and np.isnan(a["ncc"]) and a["ssim"] is None
    r1 = adjacent_slice_similarity(smooth, lab)
    r2 = adjacent_slice_similarity(smooth * 400 - 1000, lab)  # e.g. HU instead of [-1, 1]
    assert r1["ncc"] == pytest.approx(r2["ncc"]) and r1["ssim"] == pytest.approx(r2["ssim"], abs=1e-4)


def test_volume_consistency_reads_files_in_ras(tmp_path):
    lab, smooth, _ = _volumes()
    flip = np.diag([-1.0, 1.0, -1.0, 1.0])  # LAI file axes: reoriented before slicing
    img_path = write_nifti(tmp_path / "img.nii.gz", smooth, flip)
    lab_path = write_nifti(tmp_path / "lab.nii.gz", lab, flip)
    r = volume_consistency(img_path, lab_path, axis=2)
    direct = adjacent_slice_similarity(smooth[::-1, :, ::-1], lab[::-1, :, ::-1])
    assert r["ncc"] == pytest.approx(direct["ncc"]) and r["pairs"] == direct["pairs"]


def test_reformat_figure_rows_and_true_aspect(tmp_path):
    lab, smooth, striped = _volumes()
    affine = np.diag([1.0, 1.0, 3.0, 1.0])  # thick slices: coronal/sagittal tiles are 3x taller than their voxels
    path = reformat_figure({"real": smooth, "independent": striped}, affine, tmp_path / "fig.png", label=lab)
    img = np.asarray(Image.open(path))
    # rows: real, independent, label; the tallest tile is 16 slices x 3 mm = 48 px
    assert img.shape[0] == 3 * (48 + 2) + 2
    assert img.shape[1] >= 50 + 24 + 24 + 20 + 4 * 2  # names column + axial (x) + coronal (x) + sagittal (y) widths
