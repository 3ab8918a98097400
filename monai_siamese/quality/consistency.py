"""Slice consistency of a volume: how alike neighbouring slices are along the slicing axis, inside the foreground.

A volume built from independently generated 2D slices changes texture and intensity from one slice to the next
(stripes in the reformats), so its adjacent slices are less alike than a real volume's. The measure: for every pair
of neighbouring slices ``(i, i+1)`` along the slicing axis with enough foreground, the normalised cross-correlation
(NCC) and the SSIM (Wang et al., IEEE TIP 2004, MONAI's ``SSIMMetric``) of the two slices over the in-plane bounding
box of the union of their foreground (or over the foreground voxels only, ``region="mask"``); averaged over the pairs.
Plus the through-plane jitter: the mean absolute second difference along the slicing axis inside the foreground
(stripes are slice-to-slice changes that do not continue; anatomy changes smoothly). Compare a
synthetic volume with the real volume of the same label (the "gap"); both are measured on the same label.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from enum import Enum
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.metrics import SSIMMetric
from PIL import Image, ImageDraw

from monai_siamese.data.reformat import reformat_tiles, tile_table, to_ras
from monai_siamese.data.visualize import save_png

__all__ = [
    "SimilarityRegion",
    "adjacent_slice_similarity",
    "volume_consistency",
    "consistency_gap",
    "reformat_figure",
]


class SimilarityRegion(str, Enum):
    """Pixels of a slice pair that are compared."""

    BBOX = "bbox"  # the in-plane bounding box of the pair's foreground (tissue around the labels included)
    MASK = "mask"  # only the pair's foreground pixels (NCC only; SSIM always uses the bounding box)


def _np(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    a = a.astype(np.float64) - a.mean()
    b = b.astype(np.float64) - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 1e-12 else float("nan")


def adjacent_slice_similarity(
    image: np.ndarray | torch.Tensor,
    label: np.ndarray | torch.Tensor,
    axis: int = 2,
    region: SimilarityRegion | str = SimilarityRegion.BBOX,
    min_foreground: int = 16,
    ssim: bool = True,
    percentiles: Sequence[float] = (0.5, 99.5),
    win_size: int = 7,
) -> dict[str, Any]:
    """Similarity of neighbouring slices of ``image`` along ``axis``, inside ``label``'s foreground.

    Args:
        image: ``(X, Y, Z)`` volume (any units).
        label: ``(X, Y, Z)`` label on the same grid (``> 0`` = foreground).
        axis: slicing axis.
        region: :class:`SimilarityRegion`.
        min_foreground: a pair counts when both of its slices have at least this many foreground pixels.
        ssim: also compute the SSIM (slower).
        percentiles: intensity percentiles of the foreground mapped to [0, 1] before SSIM (NCC is scale-free), so
            volumes in different units compare.
        win_size: SSIM window (pairs whose box is smaller are padded to it).

    Returns:
        ``{"ncc": mean NCC, "ssim": mean SSIM (or None), "jitter": ..., "jitter_ratio": ..., "pairs": count,
        "ncc_per_pair": [...], "ssim_per_pair": [...], "pair_index": [i, ...]}`` (pair ``i`` is slices ``i`` and
        ``i + 1``). ``jitter`` is the mean absolute second difference along the slicing axis inside the foreground
        (intensities scaled by ``percentiles`` to [0, 1]): anatomy changes smoothly through the plane, stripes do
        not, and NCC saturates for smooth low-diversity generators where the jitter still shows the stripes;
        ``jitter_ratio`` divides it by the mean in-plane gradient (a scale for how textured the volume is).
    """
    img = _np(image).astype(np.float32)
    lab = _np(label)
    if img.shape != lab.shape or img.ndim != 3:
        raise ValueError(f"image {img.shape} and label {lab.shape} must be 3D volumes of the same shape")
    img = np.moveaxis(img, axis, 0)
    fg = np.moveaxis(lab > 0, axis, 0)
    region = SimilarityRegion(region)
    lo, hi = np.percentile(img[fg], percentiles) if fg.any() else (float(img.min()), float(img.max()))
    unit = np.clip((img - lo) / max(hi - lo, 1e-8), 0, 1)
    metric = SSIMMetric(spatial_dims=2, data_range=1.0, win_size=win_size) if ssim else None
    nccs, ssims, index = [], [], []
    for i in range(img.shape[0] - 1):
        if fg[i].sum() < min_foreground or fg[i + 1].sum() < min_foreground:
            continue
        union = fg[i] | fg[i + 1]
        rows, cols = np.where(union.any(1))[0], np.where(union.any(0))[0]
        box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
        if region == SimilarityRegion.MASK:
            v = _ncc(img[i][union], img[i + 1][union])
        else:
            v = _ncc(img[i][box], img[i + 1][box])
        if np.isnan(v):
            continue
        nccs.append(v)
        index.append(i)
        if metric is not None:
            a, b = unit[i][box], unit[i + 1][box]
            pad = [(0, max(0, win_size - s)) for s in a.shape]
            a, b = np.pad(a, pad, mode="edge"), np.pad(b, pad, mode="edge")
            s = metric(torch.from_numpy(a)[None, None], torch.from_numpy(b)[None, None])
            ssims.append(float(s.mean()))
    jitter, gradient = _through_plane_jitter(unit, fg)
    return {
        "ncc": float(np.mean(nccs)) if nccs else float("nan"),
        "jitter": jitter,
        "jitter_ratio": jitter / gradient if gradient > 0 else float("nan"),
        "ssim": (float(np.mean(ssims)) if ssims else float("nan")) if ssim else None,
        "pairs": len(nccs),
        "ncc_per_pair": nccs,
        "ssim_per_pair": ssims if ssim else None,
        "pair_index": index,
    }


def _through_plane_jitter(unit: np.ndarray, fg: np.ndarray) -> tuple[float, float]:
    """Mean ``|I(i-1) - 2 I(i) + I(i+1)|`` along the slicing axis (axis 0 here) where three consecutive slices are
    foreground, and the mean in-plane gradient ``|I(x+1) - I(x)|`` in the foreground, of [0, 1]-scaled intensities."""
    if unit.shape[0] < 3:
        return float("nan"), float("nan")
    m3 = fg[:-2] & fg[1:-1] & fg[2:]
    d2 = np.abs(unit[:-2] - 2 * unit[1:-1] + unit[2:])
    m1 = fg[:, 1:] & fg[:, :-1]
    d1 = np.abs(unit[:, 1:] - unit[:, :-1])
    jitter = float(d2[m3].mean()) if m3.any() else float("nan")
    return jitter, float(d1[m1].mean()) if m1.any() else float("nan")


def volume_consistency(
    image: str | os.PathLike,
    label: str | os.PathLike,
    axis: int = 2,
    ras: bool = True,
    **kwargs: Any,
) -> dict[str, Any]:
    """:func:`adjacent_slice_similarity` of two NIfTI files on the same grid.

    Args:
        image: image volume file.
        label: label volume file (same shape).
        axis: slicing axis (of the RAS-oriented volume when ``ras``, as the training pipeline slices).
        ras: reorient both to RAS first.
        kwargs: passed to :func:`adjacent_slice_similarity`.
    """
    img, lab = nib.load(str(image)), nib.load(str(label))
    a, b = np.asarray(img.dataobj, dtype=np.float32), np.asarray(lab.dataobj)
    if a.shape[:3] != b.shape[:3]:
        raise ValueError(f"{image}: shape {a.shape} differs from its label's {b.shape} ({label})")
    if ras:
        a, b = to_ras(a, img.affine)[0], to_ras(b, lab.affine)[0]
    return adjacent_slice_similarity(a, b, axis=axis, **kwargs)


def consistency_gap(real: Mapping[str, Any], synthetic: Mapping[str, Any], key: str = "ncc") -> float:
    """``real[key] - synthetic[key]``: how much less alike a synthetic volume's neighbouring slices are."""
    return float(real[key]) - float(synthetic[key])


def _label_column(names: Sequence[str], heights: Sequence[int], pad: int = 2) -> np.ndarray:
    """A white column with ``names`` written at the middle of each row (PIL's default bitmap font)."""
    total = sum(h + pad for h in heights) + pad
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    width = int(max([probe.textlength(str(n)) for n in names] + [40])) + 10
    img = Image.new("RGB", (width, total), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    y = pad
    for name, h in zip(names, heights):
        draw.text((4, y + h // 2 - 5), str(name), fill=(0, 0, 0))
        y += h + pad
    return np.asarray(img)


def reformat_figure(
    rows: Mapping[str, np.ndarray | torch.Tensor],
    affine: np.ndarray | torch.Tensor,
    path: str | os.PathLike,
    ranges: Mapping[str, tuple[float, float]] | None = None,
    label: np.ndarray | torch.Tensor | None = None,
    center: Sequence[int] | None = None,
    height: int | None = None,
    views: Sequence[str] = ("axial", "coronal", "sagittal"),
) -> str:
    """PNG figure of orthogonal reformats: one row per volume (e.g. real, independent, consistent), columns = axial /
    coronal / sagittal through the same voxel, plus a label row when ``label`` is given; written atomically.

    Args:
        rows: ``{name: (X, Y, Z) volume}`` on the same grid (the label's), any orientation.
        affine: the grid's affine.
        path: output PNG.
        ranges: per-row ``(lo, hi)`` shown black..white (default: the row's 0.5-99.5 percentiles inside the label's
            foreground, or of the whole volume).
        label: optional label volume: picks the centre (its foreground's centre of mass) and adds a colour row.
        center: voxel (RAS order) the planes pass through (default: the label's foreground centre, else the middle).
        height: tile height in pixels (default: native).
        views: planes to show.
    """
    aff = np.asarray(_np(affine), dtype=np.float64)
    lab_np = _np(label) if label is not None else None
    if center is None and lab_np is not None and (lab_np > 0).any():
        ras_lab = to_ras(lab_np, aff)[0]
        center = [int(round(float(c))) for c in np.argwhere(ras_lab > 0).mean(0)]
    tiles, names = [], []
    for name, vol in rows.items():
        v = _np(vol).astype(np.float32)
        if ranges and name in ranges:
            lo, hi = ranges[name]
        else:
            sel = v[lab_np > 0] if lab_np is not None and (lab_np > 0).any() else v.reshape(-1)
            lo, hi = (float(x) for x in np.percentile(sel, [0.5, 99.5]))
        tiles.append(reformat_tiles(v, aff, lo, hi, center=center, views=views, height=height))
        names.append(name)
    if lab_np is not None:
        tiles.append(
            reformat_tiles(
                lab_np.astype(np.float32),
                aff,
                0,
                1,
                label=lab_np,
                center=center,
                views=views,
                show="label",
                height=height,
            )
        )
        names.append("label")
    body = tile_table(tiles)
    heights = [max(t.shape[0] for t in r) for r in tiles]
    legend = _label_column(names, heights)
    return save_png(np.concatenate([legend, body], axis=1), path)
