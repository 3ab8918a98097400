"""A PNG grid of example masks per source (rows = sources, columns = examples), for reports and for eyeballing."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from monai_siamese.data.visualize import grid, label_to_rgb, save_png
from monai_siamese.masks.base import MaskSource, RegimeMask
from monai_siamese.masks.sources import build_mask_source

__all__ = ["mask_source_figure"]


def _tile(label: np.ndarray) -> np.ndarray:
    lab = np.asarray(label)
    if lab.ndim == 3:  # a volume: its middle slice along the last axis
        lab = lab[..., lab.shape[-1] // 2]
    return label_to_rgb(lab)


def _text_tile(text: str, height: int, width: int) -> np.ndarray:
    img = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    y = 4
    for line in text.split("\n"):
        draw.text((4, y), line, fill=(0, 0, 0))
        y += 12
    return np.asarray(img)


def mask_source_figure(
    regime: str | os.PathLike | Sequence[RegimeMask],
    path: str | os.PathLike,
    sources: Sequence[str | MaskSource | Mapping[str, float]] = ("regime", "augmented", "generated", "interpolated"),
    num_examples: int = 6,
    seed: int = 0,
    num_classes: int | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    regime_split: str = "training",
    dataset_dir: str | os.PathLike | None = None,
    labels: bool = True,
) -> str:
    """Write a PNG grid of example masks: one row per source, ``num_examples`` columns (dropped masks are skipped,
    so a row may be shorter), a first column naming the source when ``labels``. 3D masks show their middle slice.

    Args:
        regime: the regime's datalist (its ``regime_split``), or its masks.
        path: PNG to write.
        sources: source names or mixtures, one row each.
        num_examples: masks per row (indices ``0 .. num_examples - 1`` of each source with ``seed``).
        seed: seed of the runs.
        num_classes: classes including background (None: the datalist's; needed for in-memory masks).
        options: per source name, constructor arguments.
        regime_split: split of the regime datalist.
        dataset_dir: base folder of its relative paths.
        labels: add the row labels.

    Returns:
        ``path``.
    """
    if isinstance(regime, (str, os.PathLike)):
        from monai_siamese.masks.writer import _num_classes, load_regime_masks

        regime_name = str(regime)
        num_classes = _num_classes(regime, num_classes)
        masks = load_regime_masks(regime, num_classes, regime_split, dataset_dir)
    else:
        regime_name, masks = "<masks in memory>", list(regime)
        if num_classes is None:
            num_classes = int(max(int(m.label.max()) for m in masks)) + 1
    rows = []
    for spec in sources:
        src = build_mask_source(spec, num_classes, options).fit(masks, regime_name)
        tiles = []
        for i in range(num_examples):
            s = src.draw(i, seed)
            if s.accepted:
                tiles.append(_tile(s.label))
        if labels:
            h, w = _tile(masks[0].label).shape[:2]
            tiles.insert(0, _text_tile(src.name.replace(",", "\n"), h, w))
        rows.append(tiles)
    return save_png(grid(rows), path)
