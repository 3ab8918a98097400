"""PNG previews: label colours, overlays and grids, written atomically."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from monai_siamese.utils import atomic_path

__all__ = ["PALETTE", "to_uint8", "label_to_rgb", "overlay", "grid", "save_png"]

#: class colours (index 0 = background); cycles for more classes
PALETTE = np.array(
    [
        [0, 0, 0],
        [230, 25, 75],
        [60, 180, 75],
        [0, 130, 200],
        [255, 225, 25],
        [245, 130, 48],
        [145, 30, 180],
        [70, 240, 240],
        [240, 50, 230],
        [210, 245, 60],
    ],
    dtype=np.uint8,
)


def _np(x: np.ndarray | torch.Tensor) -> np.ndarray:
    return x.detach().cpu().float().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def to_uint8(image: np.ndarray | torch.Tensor, lo: float = -1.0, hi: float = 1.0) -> np.ndarray:
    """Channel-first ``(C, H, W)`` image in ``[lo, hi]`` -> ``(H, W, 3)`` uint8 (grey replicated)."""
    arr = _np(image)
    if arr.ndim == 2:
        arr = arr[None]
    arr = np.clip((arr - lo) / max(hi - lo, 1e-8), 0, 1) * 255
    arr = arr[:3] if arr.shape[0] >= 3 else np.repeat(arr[:1], 3, axis=0)
    # MONAI arrays are (x, y) (PIL-loaded PNGs too); PNG rows are y
    return np.ascontiguousarray(np.transpose(arr, (2, 1, 0))).astype(np.uint8)


def label_to_rgb(label: np.ndarray | torch.Tensor) -> np.ndarray:
    """``(1, H, W)`` or ``(H, W)`` integer label -> ``(H, W, 3)`` colours."""
    lab = _np(label).astype(np.int64)
    if lab.ndim == 3:
        lab = lab[0]
    rgb = PALETTE[np.mod(lab, len(PALETTE))]
    rgb[lab == 0] = 0
    return np.ascontiguousarray(np.transpose(rgb, (1, 0, 2)))


def overlay(image: np.ndarray | torch.Tensor, label: np.ndarray | torch.Tensor, alpha: float = 0.35) -> np.ndarray:
    """Image with the label's classes blended in colour (background left untouched)."""
    img = to_uint8(image).astype(np.float32)
    col = label_to_rgb(label).astype(np.float32)
    fg = (col.sum(-1, keepdims=True) > 0).astype(np.float32)
    out = img * (1 - alpha * fg) + col * alpha * fg
    return out.clip(0, 255).astype(np.uint8)


def grid(rows: Sequence[Sequence[np.ndarray]], pad: int = 2) -> np.ndarray:
    """Tile ``(H, W, 3)`` uint8 tiles (rows of equal length) with a ``pad`` pixel gap."""
    h = max(t.shape[0] for r in rows for t in r)
    w = max(t.shape[1] for r in rows for t in r)
    ncol = max(len(r) for r in rows)
    out = np.full((len(rows) * (h + pad) + pad, ncol * (w + pad) + pad, 3), 255, dtype=np.uint8)
    for i, r in enumerate(rows):
        for j, t in enumerate(r):
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            out[y : y + t.shape[0], x : x + t.shape[1]] = t
    return out


def save_png(array: np.ndarray, path: str | os.PathLike) -> str:
    """Save an ``(H, W, 3)`` uint8 array as PNG atomically."""
    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(array).save(tmp, format="PNG")
    return str(path)
