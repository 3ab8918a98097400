"""Written files respect the umask (as ``open()`` would), and a rerun removes what a killed writer left behind."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from monai_siamese.data import SyntheticPairWriter
from monai_siamese.data.io import save_nifti
from monai_siamese.utils import (
    ATOMIC_PREFIX,
    atomic_path,
    atomic_temp_owner,
    atomic_write_json,
    current_umask,
    remove_stale_temporaries,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def umask():
    """Set the process umask for one test, restore it after."""
    old = os.umask(0o022)
    os.umask(old)

    def set_mask(mask: int) -> None:
        os.umask(mask)

    yield set_mask
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _pair(writer: SyntheticPairWriter, name: str) -> dict:
    lab = torch.zeros(1, 8, 6, dtype=torch.long)
    lab[0, 2:5, 1:4] = 1
    return writer.write(name, torch.rand(1, 8, 6), lab, np.eye(4), record={"seed": 0})


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_written_files_follow_the_umask(tmp_path, umask, mask, expected):
    umask(mask)
    assert current_umask() == mask and current_umask() == mask  # reading it does not change it
    writer = SyntheticPairWriter(tmp_path / "pairs", method="unit", num_classes=2)
    e = _pair(writer, "a_000")
    paths = writer.finalize()
    written = [tmp_path / "pairs" / e[k] for k in ("image", "label", "preview")]
    written += [writer.record_path("a_000"), Path(paths["datalist"]), Path(paths["manifest"])]
    written.append(Path(save_nifti(np.zeros((3, 3)), np.eye(4), tmp_path / "x.nii.gz")))
    atomic_write_json(tmp_path / "ckpt" / "meta.json", {"k": 1})
    written.append(tmp_path / "ckpt" / "meta.json")
    with atomic_path(tmp_path / "weights.safetensors") as tmp:
        Path(tmp).write_bytes(b"w")
    written.append(tmp_path / "weights.safetensors")
    # what open() gives a new file under the same umask
    with open(tmp_path / "reference.txt", "w") as f:
        f.write("x")
    assert _mode(tmp_path / "reference.txt") == expected
    assert {str(p): oct(_mode(p)) for p in written} == {str(p): oct(expected) for p in written}


def test_temporary_names_carry_the_owner(tmp_path):
    with atomic_path(tmp_path / "images" / "case_000.nii.gz") as tmp:
        name = Path(tmp).name
        assert name.startswith(f"{ATOMIC_PREFIX}{os.getpid()}-case_000.") and name.endswith(".nii.gz")
        assert atomic_temp_owner(name) == os.getpid()
    assert atomic_temp_owner("case_000.nii.gz") is None and atomic_temp_owner(".atomic-x-1") is None
    assert os.listdir(tmp_path / "images") == ["case_000.nii.gz"]


_HOLDER = textwrap.dedent("""
    import importlib.util, sys, time
    # the real atomic_path, loaded from its file (the package's imports would take seconds)
    spec = importlib.util.spec_from_file_location("utils_under_test", sys.argv[1])
    utils = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(utils)
    cm = utils.atomic_path(sys.argv[2])
    tmp = cm.__enter__()
    with open(tmp, "wb") as f:
        f.write(b"half a pair")
    print(tmp, flush=True)
    time.sleep(120)
    """)


def _hold_temporaries(*targets: Path) -> list[tuple[subprocess.Popen, Path]]:
    """One python process per target that opened an atomic_path for it, wrote part of it, and sleeps."""
    utils = REPO / "monai_siamese" / "utils.py"
    procs = [
        subprocess.Popen([sys.executable, "-c", _HOLDER, str(utils), str(t)], stdout=subprocess.PIPE, text=True)
        for t in targets
    ]
    out = []
    for proc in procs:
        line = proc.stdout.readline().strip()
        assert line, f"holder exited with {proc.poll()}"
        out.append((proc, Path(line)))
    return out


def test_rerun_removes_a_killed_writers_temporaries(tmp_path):
    root = tmp_path / "pairs"
    first = SyntheticPairWriter(root, method="unit", num_classes=2)
    done = _pair(first, "a_000")
    first.finalize()
    user_files = [root / "images" / ".user_notes", root / ".atomic-notes.txt", root / "labels" / "README"]
    for p in user_files:
        p.write_text("mine")
    own = root / "records" / f"{ATOMIC_PREFIX}{os.getpid()}-b_000.x.json"  # this process's: never removed
    own.write_text("{}")

    (killed, stale), (live, alive_tmp) = _hold_temporaries(root / "images" / "b_000.nii.gz", root / "labels" / "x")
    try:
        assert stale.exists() and stale.parent == root / "images" and stale.stat().st_size > 0
        os.kill(killed.pid, signal.SIGKILL)
        killed.wait(30)
        assert stale.exists()  # a killed process cannot clean up: the rerun must

        rerun = SyntheticPairWriter(root, method="unit", num_classes=2)
        assert rerun.removed_temporaries == [str(stale)]
        assert not stale.exists()
        assert alive_tmp.exists(), "another live process's temporary must stay"
        assert own.exists() and all(p.read_text() == "mine" for p in user_files)
        # no pair lost: the completed one is skipped, the interrupted one is written now
        assert rerun.write("a_000", torch.zeros(1, 8, 6), torch.zeros(1, 8, 6, dtype=torch.long), None) == done
        _pair(rerun, "b_000")
        rerun.finalize()
        names = [e["image"] for e in json.loads((root / "datalist.json").read_text())["training"]]
        assert len(names) == 2 and all((root / n).is_file() for n in names)
    finally:
        for proc in (killed, live):
            if proc.poll() is None:
                proc.kill()
            proc.wait(30)
            proc.stdout.close()
    # the second holder is gone now too: the next run removes its temporary, nothing of ours is left
    remove_stale_temporaries([root / "labels"])
    own.unlink()
    assert not [p for p in root.rglob(f"{ATOMIC_PREFIX}*") if atomic_temp_owner(p.name) is not None]
