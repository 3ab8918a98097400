"""Shape interpolation between two multi-class masks: blended per-class signed distance maps.

For each class ``c`` (background included) the signed distance ``phi_c`` (negative inside) of both masks is blended,
``(1 - lam) * phi_c(A) + lam * phi_c(B)``, and each pixel takes the class with the smallest blended distance. At
``lam = 0`` this is ``A`` exactly (inside its class a pixel's distance is negative, every other class's positive),
at ``lam = 1`` it is ``B``; in between, each class boundary moves from ``A``'s to ``B``'s, and nested anatomy (WM in
GM in CSF) stays nested because every class, background included, competes on the same footing. Optionally the two
masks are first aligned (foreground centroids, or centroids plus principal axes) and the result is placed at the
interpolated pose. Tiny components that the blend makes where neither mask has their class are given to their
next-nearest class.
"""

from __future__ import annotations

import math
from enum import Enum
from typing import Any

import numpy as np
from scipy import ndimage

__all__ = ["AlignMode", "PairingMode", "signed_distance", "remove_small_components", "interpolate_labels"]


class AlignMode(str, Enum):
    """Alignment of mask B onto mask A before blending."""

    NONE = "none"  # slices of one scanner share a grid: blend in place
    CENTROID = "centroid"  # translate B's foreground centroid onto A's
    RIGID = "rigid"  # centroid plus the rotation between the foregrounds' principal axes


class PairingMode(str, Enum):
    """Which two regime masks an interpolation blends."""

    RANDOM = "random"  # any two distinct masks
    ADJACENT = "adjacent"  # neighbours in the regime's order (by slice index where known): between-slice anatomy


def signed_distance(mask: np.ndarray) -> np.ndarray:
    """Euclidean signed distance of a boolean mask: negative inside (-1 on the boundary pixels), positive outside.
    An empty mask is ``+diag`` everywhere, a full one ``-diag`` (``diag``: the array's diagonal length)."""
    m = np.asarray(mask, dtype=bool)
    diag = float(np.sqrt(sum(s * s for s in m.shape)))
    if not m.any():
        return np.full(m.shape, diag, dtype=np.float32)
    if m.all():
        return np.full(m.shape, -diag, dtype=np.float32)
    return (ndimage.distance_transform_edt(~m) - ndimage.distance_transform_edt(m)).astype(np.float32)


def remove_small_components(
    label: np.ndarray, scores: np.ndarray, min_size: int, support: np.ndarray | None = None
) -> np.ndarray:
    """Give every connected component smaller than ``min_size`` pixels (of any class, background included) to the
    class with the next-smallest ``scores`` (``(C, *spatial)``, lower is better) at each of its pixels.

    Args:
        label: integer mask.
        scores: per-class scores whose arg-min gave ``label``.
        min_size: components smaller than this are reassigned (<= 1: none).
        support: optional ``(C, *spatial)`` booleans; a small component of class ``c`` that overlaps
            ``support[c]`` is kept (e.g. where a source mask has that class: its real small components stay).
    """
    if min_size <= 1:
        return label
    out = label.copy()
    scores = scores.copy()
    for c in range(scores.shape[0]):
        comps, n = ndimage.label(out == c)
        if n == 0:
            continue
        sizes = np.bincount(comps.ravel())
        small = np.flatnonzero(sizes < min_size)
        small = small[small > 0]
        if support is not None and small.size:
            supported = np.unique(comps[support[c] & (comps > 0)])
            small = np.setdiff1d(small, supported)
        if small.size == 0 or small.size == n:  # never remove a class entirely
            continue
        sel = np.isin(comps, small)
        scores[c][sel] = np.inf
        out[sel] = scores[:, sel].argmin(0)
    return out


def _match_areas(phi: np.ndarray, targets: np.ndarray, iterations: int = 40) -> np.ndarray:
    """Per-class offsets subtracted from the blended distances so that each foreground class covers about its target
    area (the background's offset stays 0). Damped steps of at most one pixel of boundary motion; the best offsets
    seen are returned, so this never makes the areas worse than no offsets."""
    shape = (-1, *([1] * (phi.ndim - 1)))
    offsets = np.zeros(phi.shape[0], dtype=np.float64)
    best, best_err = offsets.copy(), np.inf
    for _ in range(iterations):
        lab = (phi - offsets.reshape(shape)).argmin(0)
        areas = np.bincount(lab.ravel(), minlength=phi.shape[0]).astype(np.float64)
        err = targets - areas
        total = float(np.abs(err[1:]).sum())
        if total < best_err:
            best, best_err = offsets.copy(), total
        if np.all(np.abs(err[1:]) <= np.maximum(1.0, 0.01 * targets[1:])):
            break
        for c in range(1, phi.shape[0]):
            m = lab == c
            edge = float((m & ~ndimage.binary_erosion(m)).sum()) if m.any() else 0.0
            # an offset change of delta moves the class boundary by about delta / 2 pixels: area ~ edge * delta / 2
            offsets[c] += float(np.clip(err[c] / max(edge, 1.0), -1.0, 1.0))
    return best


def _centroid(mask: np.ndarray) -> np.ndarray:
    return np.asarray(ndimage.center_of_mass(mask.astype(np.float64)), dtype=np.float64)


def _principal_axes(mask: np.ndarray) -> np.ndarray:
    pts = np.argwhere(mask).astype(np.float64)
    cov = np.cov((pts - pts.mean(0)).T)
    _, vecs = np.linalg.eigh(cov)
    return vecs  # columns, ascending eigenvalues


def _rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Rotation taking B's principal axes onto A's, with the sign choice of the smallest rotation."""
    ea, eb = _principal_axes(a), _principal_axes(b)
    d = a.ndim
    best, best_trace = np.eye(d), -np.inf
    for signs in np.ndindex(*([2] * d)):
        s = np.diag([1.0 if v == 0 else -1.0 for v in signs])
        r = ea @ s @ eb.T
        if np.linalg.det(r) < 0:
            continue
        if np.trace(r) > best_trace:
            best, best_trace = r, float(np.trace(r))
    return best


def _fractional_rotation(r: np.ndarray, t: float) -> np.ndarray:
    """``r ** t`` for a rotation matrix (2D or 3D)."""
    if r.shape == (2, 2):
        a = math.atan2(r[1, 0], r[0, 0]) * t
        return np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    from scipy.spatial.transform import Rotation

    return Rotation.from_rotvec(Rotation.from_matrix(r).as_rotvec() * t).as_matrix()


def _rotation_degrees(r: np.ndarray) -> float:
    if r.shape == (2, 2):
        return math.degrees(math.atan2(r[1, 0], r[0, 0]))
    from scipy.spatial.transform import Rotation

    return math.degrees(float(np.linalg.norm(Rotation.from_matrix(r).as_rotvec())))


def _affine_nearest(label: np.ndarray, matrix: np.ndarray, offset: np.ndarray) -> np.ndarray:
    return ndimage.affine_transform(label, matrix, offset=offset, order=0, mode="constant", cval=0)


def interpolate_labels(
    a: np.ndarray,
    b: np.ndarray,
    lam: float,
    num_classes: int,
    align: AlignMode | str = AlignMode.NONE,
    smooth_sigma: float = 0.0,
    min_component_size: int = 4,
    preserve_area: bool = True,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Interpolate between integer masks ``a`` and ``b`` (same shape, 2D or 3D) at weight ``lam`` (0: ``a``).

    Args:
        a: first mask.
        b: second mask.
        lam: weight of ``b``.
        num_classes: classes including background.
        align: align ``b`` onto ``a`` before blending (see :class:`AlignMode`); the result is placed at the pose
            interpolated with the same weight.
        smooth_sigma: Gaussian smoothing (pixels) of the blended distances before the arg-min (0: none).
        min_component_size: components smaller than this that overlap neither mask's same class (islands the blend
            made) go to their next-nearest class (1: keep all).
        preserve_area: shift each class's blended distance by a constant so that its area is the blend of the two
            areas, ``(1 - lam) * area(A) + lam * area(B)``. Without it, thin classes (a CSF rim) that do not overlap
            in the two masks vanish in between, because a pixel must be inside both to stay negative.

    Returns:
        The interpolated mask and the alignment used (``shift``, ``rotation_degrees``; empty without alignment).
    """
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    if a.shape != b.shape:
        raise ValueError(f"interpolated masks must have the same shape, got {a.shape} and {b.shape}")
    align = AlignMode(align)
    info: dict[str, Any] = {}
    ca = cb = None
    rot = np.eye(a.ndim)
    if align != AlignMode.NONE and (a > 0).any() and (b > 0).any():
        ca, cb = _centroid(a > 0), _centroid(b > 0)
        if align == AlignMode.RIGID:
            rot = _rotation_between(a > 0, b > 0)
        # resample b at x_b = rot^T (x - ca) + cb: b's foreground lands on a's centroid and axes
        b = _affine_nearest(b, rot.T, cb - rot.T @ ca)
        info = {"shift": [float(v) for v in lam * (cb - ca)], "rotation_degrees": _rotation_degrees(rot) * lam}
    phi = np.stack([(1.0 - lam) * signed_distance(a == c) + lam * signed_distance(b == c) for c in range(num_classes)])
    if smooth_sigma > 0:
        phi = np.stack([ndimage.gaussian_filter(p, smooth_sigma) for p in phi])
    if preserve_area and 0.0 < lam < 1.0:
        area_a = np.bincount(a.ravel(), minlength=num_classes)[:num_classes].astype(np.float64)
        area_b = np.bincount(b.ravel(), minlength=num_classes)[:num_classes].astype(np.float64)
        offsets = _match_areas(phi, (1.0 - lam) * area_a + lam * area_b)
        phi = phi - offsets.reshape(-1, *([1] * (phi.ndim - 1)))
    out = phi.argmin(0).astype(np.int64)
    support = np.stack([(a == c) | (b == c) for c in range(num_classes)])
    out = remove_small_components(out, phi, int(min_component_size), support)
    if ca is not None and cb is not None:
        # move the blend (in a's pose) to the interpolated pose: rotation rot^(-lam) about ca, shift lam * (cb - ca)
        r_lam = _fractional_rotation(rot, lam)
        target = ca + lam * (cb - ca)
        out = _affine_nearest(out, r_lam, ca - r_lam @ target)
    return out, info
