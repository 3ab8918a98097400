"""Shared fixtures: the MNI152 demo data built once per session into a temporary folder; a session guard that
fails the run when a test wrote into the repository (outputs belong in tmp folders)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory) -> str:
    """The demo data, built once into a session folder (``MONAI_SIAMESE_DEMO_DIR`` points there)."""
    from monai_siamese.data.demo import build_demo_data

    root = tmp_path_factory.mktemp("demo") / "mni152"
    os.environ["MONAI_SIAMESE_DEMO_DIR"] = str(root)
    build_demo_data(str(root))
    return str(root)


@pytest.fixture(scope="session")
def demo_volume_dir(tmp_path_factory) -> str:
    """The 3D demo volume, built once into a session folder."""
    from monai_siamese.data.demo import build_demo_volume

    return build_demo_volume(str(tmp_path_factory.mktemp("demo3d") / "mni152_volume"))


@pytest.fixture(scope="session")
def mni_t1():
    """The MNI152 2009 T1 template as a nibabel image (real pixels, real geometry)."""
    from nilearn import datasets

    return datasets.load_mni152_template(resolution=2)


REPO = Path(__file__).resolve().parents[1]
#: folders of the checkout that tests and tools may write (environments, caches, build output)
_SKIP = {".git", ".venv", ".venv-monailabel", ".pytest_cache", "__pycache__", ".mypy_cache", ".ruff_cache", "build"}


def _repo_files() -> dict[str, int]:
    out = {}
    for root, dirs, files in os.walk(REPO):
        dirs[:] = [d for d in dirs if d not in _SKIP and not d.endswith(".egg-info")]
        for f in files:
            path = os.path.join(root, f)
            try:
                out[os.path.relpath(path, REPO)] = os.stat(path).st_mtime_ns
            except OSError:
                continue
    return out


def pytest_sessionstart(session) -> None:
    session.config._repo_files_at_start = _repo_files()


def pytest_sessionfinish(session, exitstatus) -> None:
    """Fail the session when a test created or modified a file of the checkout (ignored files included)."""
    before = getattr(session.config, "_repo_files_at_start", None)
    if before is None or hasattr(session.config, "workerinput"):  # xdist workers: the controller checks
        return
    after = _repo_files()
    touched = sorted(p for p, t in after.items() if before.get(p) != t)
    if touched:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        msg = f"tests wrote into the repository ({len(touched)} files), e.g. {touched[:5]}: write to tmp_path instead"
        if reporter is not None:
            reporter.write_line(f"ERROR: {msg}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
