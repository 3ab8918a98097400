"""The bad-input matrix through every entry point: one datalist with a good pair and three broken ones (a missing
file, a label of another shape, a label value outside the classes). A bundle run, the evaluation and the MONAI Label
core function each stop before any training or sampling, name every broken file (one line each, no traceback on the
command line) and leave the good entry and the input files untouched."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from helpers import BAD_FILES, write_bad_datalist

from monai_siamese.errors import InputError, find_input_error
from monai_siamese.testing import bundle_command


def _named_every_bad_file(text: str) -> None:
    for name, what in BAD_FILES.items():
        line = next((line for line in text.splitlines() if name in line), "")
        assert what in line, (name, text[-2000:])
    assert "ok_lab.nii.gz" not in text


def _inputs(folder):
    return {p.name: p.stat().st_mtime_ns for p in folder.glob("*.nii.gz")}


@pytest.mark.parametrize("bundle", ["seg_guided_diffusion", "segmentation"])
def test_bundle_run(bundle, tmp_path):
    datalist = write_bad_datalist(tmp_path, ("training", "validation"))
    before = _inputs(tmp_path)
    over = {"datalist": str(datalist), "dataset_dir": str(tmp_path), "ckpt_dir": str(tmp_path / "models")}
    proc = subprocess.run(
        bundle_command(bundle, ["train.json", "tiny.json"], "training", over, tmp_path / "args.json"),
        capture_output=True, text=True, cwd=str(tmp_path), timeout=600,
    )  # fmt: skip
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    _named_every_bad_file(proc.stderr)
    assert not (tmp_path / "models").exists() and _inputs(tmp_path) == before


def test_evaluate(tmp_path):
    datalist = write_bad_datalist(tmp_path, ("training", "test"))
    cmd = [sys.executable, "-m", "monai_siamese", "evaluate", "--preset", "micro", "--datalist", str(datalist),
           "--out", str(tmp_path / "eval")]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=str(tmp_path), timeout=600)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    _named_every_bad_file(proc.stderr)
    assert not (tmp_path / "eval" / "judge").exists() and not (tmp_path / "eval" / "runs").exists()


def test_monai_label_core_synthesis(tmp_path):
    from monai_siamese.bundles import bundle_path
    from monai_siamese.monailabel_app import core

    write_bad_datalist(tmp_path)
    for image, label in (("missing_lab_img.nii.gz", "does_not_exist.nii.gz"), ("seven_img.nii.gz", "seven_lab.nii.gz")):
        with pytest.raises(Exception) as info:
            core.synthesize(bundle_path("seg_guided_diffusion"), str(tmp_path / image), str(tmp_path / label),
                            tmp_path / "out.nii.gz", work_dir=tmp_path)  # fmt: skip
        error = find_input_error(info.value)
        assert isinstance(error, InputError) and label in str(error) and BAD_FILES[label] in str(error)
        assert not (tmp_path / "out.nii.gz").exists()
