"""Shape interpolation: endpoints, in-between areas, nesting kept, optional alignment, on shapes and MNI masks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from monai_siamese.masks import foreground_components, interpolate_labels


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    scores = []
    for c in np.union1d(np.unique(a), np.unique(b)):
        if c == 0:
            continue
        x, y = a == c, b == c
        scores.append(2 * (x & y).sum() / max(x.sum() + y.sum(), 1))
    return float(np.mean(scores))


def test_endpoints_and_between_on_nested_discs(make_nested):
    a = make_nested(48, (24, 24), (16, 11, 6))
    b = make_nested(48, (24, 24), (20, 13, 5))
    np.testing.assert_array_equal(interpolate_labels(a, b, 0.0, 4, min_component_size=1)[0], a)
    np.testing.assert_array_equal(interpolate_labels(a, b, 1.0, 4, min_component_size=1)[0], b)
    mid, info = interpolate_labels(a, b, 0.5, 4)
    assert info == {}
    for c in (1, 2, 3):
        lo, hi = sorted([(a == c).sum(), (b == c).sum()])
        assert lo * 0.95 <= (mid == c).sum() <= hi * 1.05, c
    # nesting kept: the innermost class never touches the background
    inner = mid == 3
    grown = np.zeros_like(inner)
    grown[1:] |= inner[:-1]
    grown[:-1] |= inner[1:]
    grown[:, 1:] |= inner[:, :-1]
    grown[:, :-1] |= inner[:, 1:]
    assert not (grown & (mid == 0)).any()
    # the outer radius is in between: the area of a disc of radius ~ (16 + 20) / 2
    r = math.sqrt((mid > 0).sum() / math.pi)
    assert 17.0 < r < 19.0, r


def test_alignment_centroid_and_rigid():
    size = 64
    yy, xx = np.indices((size, size)).astype(float)

    def ellipse(cx, cy, angle_deg, ra=14, rb=6):
        t = math.radians(angle_deg)
        u = (xx - cx) * math.cos(t) + (yy - cy) * math.sin(t)
        v = -(xx - cx) * math.sin(t) + (yy - cy) * math.cos(t)
        return ((u / ra) ** 2 + (v / rb) ** 2 <= 1).astype(np.int64)

    a, b = ellipse(24, 32, 0), ellipse(40, 32, 0)
    plain, _ = interpolate_labels(a, b, 0.5, 2, align="none")
    centred, info = interpolate_labels(a, b, 0.5, 2, align="centroid")
    assert info["shift"][1] == pytest.approx(8.0, abs=0.5)
    target = ellipse(32, 32, 0)
    assert _dice(centred, target) > 0.95
    assert _dice(plain, target) < _dice(centred, target)

    a, b = ellipse(32, 32, 0), ellipse(32, 32, 40)
    rigid, info = interpolate_labels(a, b, 0.5, 2, align="rigid")
    assert abs(info["rotation_degrees"]) == pytest.approx(20.0, abs=2.0)
    assert _dice(rigid, ellipse(32, 32, 20)) > 0.9


def test_mni_interpolation_between_neighbouring_slices(regime_masks):
    a, b = regime_masks[0].label, regime_masks[1].label  # slices 40 and 44
    assert _dice(interpolate_labels(a, b, 0.0, 4)[0], a) > 0.98
    assert _dice(interpolate_labels(a, b, 1.0, 4)[0], b) > 0.98
    mid, _ = interpolate_labels(a, b, 0.5, 4)
    for c in (0, 1, 2, 3):
        lo, hi = sorted([(a == c).sum(), (b == c).sum()])
        assert lo * 0.97 <= (mid == c).sum() <= hi * 1.03, c
    assert foreground_components(mid) <= max(foreground_components(a), foreground_components(b))
    # closer to each endpoint than the endpoints are to each other
    assert _dice(mid, a) > _dice(a, b) and _dice(mid, b) > _dice(a, b)


def test_interpolation_3d(make_nested):
    a = make_nested(20, (10, 10, 10), (8, 5, 2.5))
    b = make_nested(20, (10, 10, 10), (6, 4, 2.0))
    mid, _ = interpolate_labels(a, b, 0.5, 4)
    assert mid.shape == a.shape
    assert (b > 0).sum() < (mid > 0).sum() < (a > 0).sum()
    assert set(np.unique(mid)) == {0, 1, 2, 3}
