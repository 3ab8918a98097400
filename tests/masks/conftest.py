"""Fixtures of the mask-source tests: a 4-mask regime of the MNI152 demo slices and synthetic nested shapes."""

from __future__ import annotations

import numpy as np
import pytest

from monai_siamese.data import load_datalist, write_datalist

#: slice indices of the demo regime: two neighbours (40, 44) and two far apart
REGIME_SLICES = (40, 44, 60, 120)


@pytest.fixture(scope="session")
def regime_datalist(demo_dir, tmp_path_factory) -> str:
    """A regime datalist with 4 real MNI152 demo pairs (absolute paths), as the evaluation writes one."""
    entries = load_datalist(f"{demo_dir}/datalist.json", "training")
    chosen = [e for e in entries if e["slice_index"] in REGIME_SLICES]
    assert len(chosen) == len(REGIME_SLICES)
    path = tmp_path_factory.mktemp("regime") / "regime.json"
    return write_datalist(path, {"training": chosen}, relative=False, extra={"num_classes": 4})


@pytest.fixture(scope="session")
def regime_masks(regime_datalist):
    from monai_siamese.masks import load_regime_masks

    return load_regime_masks(regime_datalist, 4)


def nested_disc(size: int, center: tuple[float, ...], radii: tuple[float, float, float]) -> np.ndarray:
    """Classes 1 > 2 > 3 as nested discs (2D) or balls (3D) of decreasing radii around ``center``."""
    grid = np.indices((size,) * len(center)).astype(np.float64)
    r = np.sqrt(sum((g - c) ** 2 for g, c in zip(grid, center)))
    lab = np.zeros(r.shape, dtype=np.int64)
    for cls, rad in zip((1, 2, 3), radii):
        lab[r <= rad] = cls
    return lab


@pytest.fixture(scope="session")
def make_nested():
    """:func:`nested_disc`, for tests."""
    return nested_disc
