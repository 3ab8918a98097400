"""Validation reports every problem at once, one line per file, before any training."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
from helpers import write_bad_datalist as _bad_datalist
from helpers import write_nifti

from monai_siamese.data import DataValidationError, validate_datalist, validate_or_raise


def test_validate_reports_each_bad_file(tmp_path):
    from monai_siamese.data import load_datalist

    entries = load_datalist(_bad_datalist(tmp_path), "training")
    problems = validate_datalist(entries, num_classes=4)
    by_file = {p.file.split("/")[-1]: p.message for p in problems}
    assert set(by_file) == {"does_not_exist.nii.gz", "shape_lab.nii.gz", "seven_lab.nii.gz"}
    assert "not found" in by_file["does_not_exist.nii.gz"]
    assert "(8, 9)" in by_file["shape_lab.nii.gz"] and "(8, 8)" in by_file["shape_lab.nii.gz"]
    assert "{0, 7}" in by_file["seven_lab.nii.gz"]
    try:
        validate_or_raise(entries, 4)
    except DataValidationError as e:
        assert len(e.problems) == 3 and "seven_lab.nii.gz" in str(e)
    else:
        raise AssertionError("validate_or_raise did not raise")


def test_validate_flags_nan_empty_and_geometry(tmp_path):
    img = np.ones((6, 6), np.float32)
    img[0, 0] = np.nan
    lab = np.zeros((6, 6), np.uint8)
    write_nifti(tmp_path / "nan.nii.gz", img)
    write_nifti(tmp_path / "empty.nii.gz", lab)
    aff = np.diag([2.0, 2.0, 1.0, 1.0])
    write_nifti(tmp_path / "img.nii.gz", np.ones((6, 6), np.float32))
    lab2 = lab.copy()
    lab2[2, 2] = 1
    write_nifti(tmp_path / "geo.nii.gz", lab2, aff)
    problems = validate_datalist(
        [
            {"image": str(tmp_path / "nan.nii.gz"), "label": str(tmp_path / "empty.nii.gz")},
            {"image": str(tmp_path / "img.nii.gz"), "label": str(tmp_path / "geo.nii.gz")},
        ],
        num_classes=2,
    )
    text = "\n".join(map(str, problems))
    assert "nan.nii.gz: image contains 1 NaN/Inf" in text
    assert "empty.nii.gz: label is empty" in text
    assert "geo.nii.gz: label geometry differs" in text


def test_cli_validate_fails_fast_with_one_line_per_file(tmp_path):
    path = _bad_datalist(tmp_path)
    t0 = time.time()
    r = subprocess.run(
        [sys.executable, "-m", "monai_siamese", "validate", "--datalist", str(path)], capture_output=True, text=True
    )
    elapsed = time.time() - t0
    assert r.returncode == 1, r.stderr
    lines = [ln for ln in r.stdout.splitlines() if ln.strip()]
    assert len(lines) == 3
    assert any("does_not_exist.nii.gz" in ln for ln in lines)
    assert any("shape_lab.nii.gz" in ln for ln in lines)
    assert any("seven_lab.nii.gz" in ln and "{0, 7}" in ln for ln in lines)
    assert "3 problem(s)" in r.stderr
    assert elapsed < 60  # seconds, not hours: no training starts


def test_cli_validate_ok_on_demo(demo_dir):
    r = subprocess.run(
        [sys.executable, "-m", "monai_siamese", "validate", "--datalist", f"{demo_dir}/datalist.json"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "OK:" in r.stdout
