"""Shared fixtures: the MNI152 demo data built once per session into a temporary folder."""

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
