"""3D -> 2D slicing that keeps geometry and provenance, and an in-memory dataset of slices."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from monai.data import Dataset, MetaTensor
from monai.transforms import apply_transform

from monai_siamese.data.context import fit_context, slice_context

__all__ = ["slice_affine", "foreground_count", "iter_slices", "SliceDataset", "PROVENANCE_KEYS"]

logger = logging.getLogger(__name__)

#: keys every slice item carries so that a synthetic slice can be traced to its source
PROVENANCE_KEYS = ("source_image", "source_label", "slice_index", "slice_axis")


def slice_affine(affine: np.ndarray | torch.Tensor, axis: int, index: int) -> torch.Tensor:
    """The 4x4 affine of slice ``index`` along spatial ``axis`` of a volume with 4x4 ``affine``.

    The 2D slice's voxel ``(i, j)`` is the volume's voxel with ``index`` inserted at ``axis``; the third column
    keeps the through-plane direction so the slice, written as a 2D NIfTI, sits where it was in the scanner.
    """
    aff = torch.as_tensor(affine, dtype=torch.float64)
    if aff.shape != (4, 4):
        raise ValueError(f"expected a 4x4 affine, got shape {tuple(aff.shape)}")
    in_plane = [a for a in range(3) if a != axis]
    p = torch.zeros(4, 4, dtype=torch.float64)
    p[in_plane[0], 0] = 1.0
    p[in_plane[1], 1] = 1.0
    p[axis, 2] = 1.0
    p[axis, 3] = float(index)
    p[3, 3] = 1.0
    return aff @ p


def foreground_count(label: torch.Tensor, classes: Sequence[int] | None = None) -> torch.Tensor:
    """Per-slice count of foreground pixels (``label > 0`` or ``label in classes``) over all but the last dim."""
    fg = label > 0 if not classes else torch.isin(label, torch.as_tensor(list(classes), device=label.device))
    return fg.reshape(-1, fg.shape[-1]).sum(0)


def _path(obj: Any) -> str:
    if isinstance(obj, MetaTensor):
        return str(obj.meta.get("filename_or_obj", ""))
    return str(obj) if isinstance(obj, str) else ""


def iter_slices(
    item: dict,
    axis: int = 2,
    min_foreground: float = 1,
    foreground_classes: Sequence[int] | None = None,
    image_key: str = "image",
    label_key: str = "label",
    context_slices: int = 0,
    previous_image: bool | None = None,
) -> Iterator[dict]:
    """Yield the 2D slices of a loaded, channel-first item, with geometry and provenance.

    2D items (``C, H, W``) are yielded once, unchanged but for the provenance keys. 3D items
    (``C, X, Y, Z``) are cut along spatial ``axis`` (0, 1 or 2); a slice is kept when its foreground
    (``label > 0``, or only ``foreground_classes``) has at least ``min_foreground`` pixels, or, when
    ``0 < min_foreground < 1``, at least that fraction of the slice. Each slice's MetaTensors get the slice's
    4x4 affine, so MONAI spatial transforms and writers keep real geometry.

    Args:
        item: dict with channel-first MetaTensors under ``image_key`` and ``label_key``.
        axis: spatial axis to slice along.
        min_foreground: minimum foreground pixels (>= 1) or fraction (< 1) for a slice to be kept.
        foreground_classes: classes counted as foreground (default: all non-zero).
        image_key: image key.
        label_key: label key.
        context_slices: 2.5D context: add the labels of the ``k`` neighbours on each side of every slice and the
            previous slice's image (see :mod:`monai_siamese.data.context`); 0 adds nothing (unless
            ``previous_image``). Neighbours are taken from the whole volume, kept by the foreground filter or not.
        previous_image: add the previous slice's image (default: when ``context_slices > 0``).
    """
    previous_image = context_slices > 0 if previous_image is None else bool(previous_image)
    with_context = context_slices > 0 or previous_image
    ctx_kwargs: dict[str, Any] = dict(
        context_slices=context_slices, previous_image=previous_image, image_key=image_key, label_key=label_key
    )
    image, label = item.get(image_key), item.get(label_key)
    if image is None and label is None:
        raise ValueError(f"item has neither '{image_key}' nor '{label_key}'")
    src_img = _path(image) if image is not None else ""
    src_lab = _path(label) if label is not None else ""
    if image is None:  # mask-only input (edited or generated masks): the label gives the geometry
        image = label
    if image.ndim == 3:
        out = dict(item)
        # a pre-sliced 2D file may carry its slice index in the datalist entry
        out.update(
            source_image=src_img,
            source_label=src_lab,
            slice_index=int(item.get("slice_index", -1)),
            slice_axis=int(item.get("slice_axis", -1)),
        )
        if with_context:
            out.update(slice_context(item, out, axis, -1, **ctx_kwargs))
        yield out
        return
    if image.ndim != 4:
        raise ValueError(f"{src_img}: expected a channel-first 2D or 3D image, got shape {tuple(image.shape)}")
    if axis not in (0, 1, 2):
        raise ValueError(f"slice axis must be 0, 1 or 2, got {axis}")
    if label is not None and label is not image and label.shape[1:] != image.shape[1:]:
        raise ValueError(
            f"{src_lab}: label shape {tuple(label.shape[1:])} differs from image shape {tuple(image.shape[1:])} "
            f"({src_img})"
        )
    n = image.shape[axis + 1]
    if label is not None:
        lab_last = label.movedim(axis + 1, -1)
        counts = foreground_count(lab_last, foreground_classes)
        plane = lab_last.shape[1] * lab_last.shape[2]
        threshold = min_foreground * plane if 0 < min_foreground < 1 else min_foreground
        keep = torch.nonzero(counts >= threshold).flatten().tolist()
    else:
        keep = list(range(n))
    affine = image.affine if isinstance(image, MetaTensor) else torch.eye(4, dtype=torch.float64)
    for k in keep:
        aff = slice_affine(affine, axis, k)
        out = dict(item)
        for key in (image_key, label_key):
            if key not in item or item[key] is None:
                continue
            vol = item[key]
            sl = vol.select(axis + 1, k).clone()
            if isinstance(vol, MetaTensor):
                meta = {
                    kk: v
                    for kk, v in vol.meta.items()
                    if kk in ("filename_or_obj", "space", "original_channel_dim", "original_affine")
                }
                meta["affine"] = aff.clone()
                meta["spatial_shape"] = np.asarray(sl.shape[1:])
                sl = MetaTensor(sl.as_tensor(), meta=meta)
            out[key] = sl
        out.update(source_image=src_img, source_label=src_lab, slice_index=int(k), slice_axis=int(axis))
        if with_context:
            out.update(slice_context(item, out, axis, int(k), **ctx_kwargs))
        yield out


class SliceDataset(Dataset):
    """A dataset of 2D slices cut from 2D/3D image-label pairs, preprocessed once and cached in memory.

    Stages: ``load_transform`` per source item (load, channel-first, label mapping, intensity preset at volume
    level), :func:`iter_slices`, ``slice_transform`` per slice (deterministic 2D: resize, pad/crop), cached; then
    ``transform`` per access (random: mask ablation, dropout). The cache holds only slices that pass the
    foreground filter; every one keeps its source path, slice index and affine.

    Args:
        data: datalist entries (``{"image": path, "label": path, ...}``).
        load_transform: transform that loads and normalises one entry.
        axis: slicing axis for 3D volumes.
        min_foreground: see :func:`iter_slices`.
        foreground_classes: see :func:`iter_slices`.
        slice_transform: deterministic transform applied once per slice before caching.
        transform: random transform applied at every access.
        num_workers: threads used to load source items.
        max_slices: keep at most this many slices (evenly spaced over the sorted cache), for quick runs.
        progress: log progress.
        allow_empty: an empty ``data`` list gives an empty dataset instead of an error (e.g. an optional
            synthetic part); items that yield no slice are still an error.
        context_slices: 2.5D context for slice-consistent volume generation: every slice also carries the labels of
            its ``k`` neighbours on each side (clamped at the volume's edges, with a validity flag) and the previous
            slice's image, fitted by the same ``slice_transform`` (keys in :mod:`monai_siamese.data.context`;
            encode them with :class:`~monai_siamese.transforms.ContextConditiond`). 0 (default) adds nothing.
        previous_image: add the previous slice's image (default: when ``context_slices > 0``).
    """

    def __init__(
        self,
        data: Sequence[dict],
        load_transform: Callable,
        axis: int = 2,
        min_foreground: float = 1,
        foreground_classes: Sequence[int] | None = None,
        slice_transform: Callable | None = None,
        transform: Callable | None = None,
        num_workers: int = 0,
        max_slices: int | None = None,
        progress: bool = True,
        allow_empty: bool = False,
        context_slices: int = 0,
        previous_image: bool | None = None,
    ) -> None:
        self.source = list(data)
        self.load_transform = load_transform
        self.axis = axis
        self.min_foreground = min_foreground
        self.foreground_classes = foreground_classes
        self.slice_transform = slice_transform
        self.context_slices = context_slices
        self.previous_image = context_slices > 0 if previous_image is None else bool(previous_image)
        with_context = context_slices > 0 or self.previous_image
        slices: list[dict] = []

        def _load(entry: dict) -> list[dict]:
            loaded = apply_transform(self.load_transform, entry)
            items = []
            for s in iter_slices(
                loaded,
                axis,
                min_foreground,
                foreground_classes,
                context_slices=context_slices,
                previous_image=self.previous_image,
            ):
                fitted = apply_transform(slice_transform, s) if slice_transform is not None else s
                items.append(fit_context(fitted, slice_transform) if with_context else fitted)
            return items

        if num_workers > 0:
            with ThreadPoolExecutor(num_workers) as pool:
                for items in pool.map(_load, self.source):
                    slices.extend(items)
        else:
            for i, entry in enumerate(self.source):
                slices.extend(_load(entry))
                if progress and (i + 1) % 50 == 0:
                    logger.info(f"SliceDataset: loaded {i + 1}/{len(self.source)} items, {len(slices)} slices")
        if not slices and not (allow_empty and not self.source):
            raise ValueError(
                f"SliceDataset: no slice of the {len(self.source)} items has enough foreground "
                f"(min_foreground={min_foreground}, classes={foreground_classes})"
            )
        if max_slices is not None and len(slices) > max_slices:
            idx = np.linspace(0, len(slices) - 1, max_slices).round().astype(int)
            slices = [slices[i] for i in idx]
        if progress and self.source:
            logger.info(f"SliceDataset: {len(slices)} slices from {len(self.source)} items")
        super().__init__(data=slices, transform=transform)
