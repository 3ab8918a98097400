"""Orthogonal reformats of a 3D volume (axial / coronal / sagittal planes) as PNG tiles with true aspect ratio.

Used for the previews of synthetic volumes and the slice-consistency figure: a volume assembled from independently
generated 2D slices looks fine in the slicing plane and striped in the two others, so both must be looked at.
"""

from __future__ import annotations

from collections.abc import Sequence

import nibabel as nib
import numpy as np
import torch
from PIL import Image

from monai_siamese.data.visualize import label_to_rgb, overlay, to_uint8

__all__ = ["VIEW_NAMES", "to_ras", "view_planes", "reformat_tiles", "tile_table"]

#: plane names of the views of a RAS volume, in the order of the normal axis (0: sagittal, 1: coronal, 2: axial)
VIEW_NAMES = ("sagittal", "coronal", "axial")


def _np(x: np.ndarray | torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def to_ras(array: np.ndarray | torch.Tensor, affine: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Reorder/flip the 3 spatial axes of ``array`` (``(X, Y, Z)`` or ``(X, Y, Z, C)``) to the closest RAS
    orientation (as MONAI's ``Orientation("RAS")`` and nibabel's ``as_closest_canonical``); returns the array and
    its new affine."""
    arr = _np(array)
    aff = np.asarray(_np(affine), dtype=np.float64)
    ornt = nib.orientations.io_orientation(aff)
    ras = nib.orientations.axcodes2ornt("RAS")
    xform = nib.orientations.ornt_transform(ornt, ras)
    out = nib.orientations.apply_orientation(arr, xform)
    new_aff = aff @ nib.orientations.inv_ornt_aff(xform, arr.shape[:3])
    return np.ascontiguousarray(out), new_aff


def view_planes(volume: np.ndarray, center: Sequence[int] | None = None) -> dict[str, np.ndarray]:
    """The three planes through ``center`` (default: the middle) of an ``(X, Y, Z)`` RAS volume, as ``(u, v)``
    arrays: axial ``(x, y)``, coronal ``(x, z)``, sagittal ``(y, z)``."""
    vol = _np(volume)
    c = [s // 2 for s in vol.shape[:3]] if center is None else [int(v) for v in center]
    return {"axial": vol[:, :, c[2]], "coronal": vol[:, c[1], :], "sagittal": vol[c[0], :, :]}


def _spacings(affine: np.ndarray) -> np.ndarray:
    return np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)


def _display(tile: np.ndarray, su: float, sv: float, height: int | None) -> np.ndarray:
    """``(v, u, 3)`` tile (rows = v) -> flipped so v increases upwards, resized to square physical pixels."""
    tile = np.ascontiguousarray(tile[::-1])
    rows, cols = tile.shape[:2]
    base = min(su, sv)
    new_rows, new_cols = max(1, round(rows * sv / base)), max(1, round(cols * su / base))
    if height is not None:
        scale = height / new_rows
        new_rows, new_cols = height, max(1, round(new_cols * scale))
    if (new_rows, new_cols) != (rows, cols):
        tile = np.asarray(Image.fromarray(tile).resize((new_cols, new_rows), Image.BILINEAR))
    return tile


def reformat_tiles(
    volume: np.ndarray | torch.Tensor,
    affine: np.ndarray | torch.Tensor,
    lo: float,
    hi: float,
    label: np.ndarray | torch.Tensor | None = None,
    center: Sequence[int] | None = None,
    views: Sequence[str] = ("axial", "coronal", "sagittal"),
    show: str = "image",
    height: int | None = None,
) -> list[np.ndarray]:
    """PNG tiles (``(H, W, 3)`` uint8) of orthogonal planes of a 3D volume, anterior / superior up, true aspect.

    Args:
        volume: ``(X, Y, Z)`` image (any orientation: reoriented to RAS here, with ``affine``).
        affine: its 4x4 affine.
        lo: intensity shown black.
        hi: intensity shown white.
        label: optional ``(X, Y, Z)`` label on the same grid (for ``show="overlay"`` / ``"label"``).
        center: voxel (in RAS order) the planes pass through (default: the middle).
        views: planes to show, among ``axial``, ``coronal``, ``sagittal``.
        show: ``image``, ``overlay`` (image with the label in colour) or ``label``.
        height: resize every tile to this height (default: the volume's own size).
    """
    vol, aff = to_ras(volume, affine)
    lab = to_ras(label, affine)[0] if label is not None else None
    sp = _spacings(aff)
    planes = view_planes(vol, center)
    lab_planes = view_planes(lab, center) if lab is not None else {}
    axes = {"axial": (0, 1), "coronal": (0, 2), "sagittal": (1, 2)}
    tiles = []
    for v in views:
        u_ax, v_ax = axes[v]
        img = planes[v].astype(np.float32)
        unit = (np.clip(img, lo, hi) - lo) / max(hi - lo, 1e-8) * 2 - 1  # [-1, 1] for the visualize helpers
        if show == "label":
            tile = label_to_rgb(lab_planes[v])
        elif show == "overlay" and lab is not None:
            tile = overlay(unit[None], lab_planes[v])
        else:
            tile = to_uint8(unit[None])
        tiles.append(_display(tile, sp[u_ax], sp[v_ax], height))
    return tiles


def tile_table(rows: Sequence[Sequence[np.ndarray]], pad: int = 2) -> np.ndarray:
    """Tiles in a table: every column as wide as its widest tile, every row as tall as its tallest, tiles centred
    (``visualize.grid`` gives every cell the largest tile's size, which wastes space with mixed aspect ratios)."""
    ncol = max(len(r) for r in rows)
    widths = [max(r[j].shape[1] for r in rows if j < len(r)) for j in range(ncol)]
    heights = [max(t.shape[0] for t in r) for r in rows]
    out = np.full((sum(heights) + pad * (len(rows) + 1), sum(widths) + pad * (ncol + 1), 3), 255, dtype=np.uint8)
    y = pad
    for r, h in zip(rows, heights):
        x = pad
        for j, t in enumerate(r):
            oy, ox = y + (h - t.shape[0]) // 2, x + (widths[j] - t.shape[1]) // 2
            out[oy : oy + t.shape[0], ox : ox + t.shape[1]] = t
            x += widths[j] + pad
        y += h + pad
    return out
