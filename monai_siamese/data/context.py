"""2.5D slice context: the labels of a slice's neighbours and the previous real slice image.

A slice-by-slice generator that must produce a coherent volume needs to know what lies around the slice: the labels
of its ``k`` neighbours above and below (so the anatomy it draws continues through the plane) and the image of the
slice before it (so texture and intensity continue from one slice to the next when a volume is generated in
order). :func:`slice_context` cuts these from the loaded volume for one slice; :func:`fit_context` applies the
same deterministic 2D fit (resize, pad) as the slice itself. Encoding them into the condition tensor is the job of
:class:`~monai_siamese.transforms.ContextConditiond`.

Keys added to a slice item (the volume's own slicing order, ``index - j`` is "above"):

- ``label_context``: ``(2k, H, W)`` labels of slices ``index-k .. index-1, index+1 .. index+k``. A neighbour
  outside the volume holds the nearest slice inside it (the edge slice, i.e. clamped).
- ``context_valid``: ``(2k,)`` bool, False where the neighbour is outside the volume (the transform then either
  keeps the clamped label or writes its null encoding, see :class:`~monai_siamese.transforms.ContextEdge`).
- ``previous_image``: ``(C, H, W)`` image of slice ``index - 1`` (in the model's [-1, 1] units, after the same fit),
  the null value at the first slice (and for 2D items, which have no neighbours).
- ``previous_valid``: bool scalar tensor, False where ``previous_image`` is the null value.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from monai.data import MetaTensor
from monai.transforms import apply_transform

__all__ = [
    "CONTEXT_LABEL_KEY",
    "CONTEXT_VALID_KEY",
    "PREVIOUS_IMAGE_KEY",
    "PREVIOUS_VALID_KEY",
    "CONTEXT_KEYS",
    "NULL_IMAGE",
    "neighbour_offsets",
    "slice_context",
    "fit_context",
]

CONTEXT_LABEL_KEY = "label_context"
CONTEXT_VALID_KEY = "context_valid"
PREVIOUS_IMAGE_KEY = "previous_image"
PREVIOUS_VALID_KEY = "previous_valid"
#: every key :func:`slice_context` adds
CONTEXT_KEYS = (CONTEXT_LABEL_KEY, CONTEXT_VALID_KEY, PREVIOUS_IMAGE_KEY, PREVIOUS_VALID_KEY)
#: value of a missing previous image: the null condition of ``monai_siamese.transforms.NULL_CONDITION`` (not imported
#: from there so that the data layer does not depend on the transforms layer)
NULL_IMAGE = -1.0


def neighbour_offsets(context_slices: int) -> list[int]:
    """Slice offsets of the ``2k`` neighbours in channel order: ``-k .. -1, +1 .. +k``."""
    if context_slices < 0:
        raise ValueError(f"context_slices must be >= 0, got {context_slices}")
    return [*range(-context_slices, 0), *range(1, context_slices + 1)]


def _like(t: torch.Tensor, ref: Any) -> torch.Tensor:
    """``t`` as a MetaTensor with the slice's metadata (so spatial transforms see the slice's geometry)."""
    if isinstance(ref, MetaTensor):
        return MetaTensor(t, meta=dict(ref.meta))
    return t


def slice_context(
    item: Mapping[str, Any],
    slice_item: Mapping[str, Any],
    axis: int,
    index: int,
    context_slices: int,
    previous_image: bool = True,
    image_key: str = "image",
    label_key: str = "label",
    null_value: float = NULL_IMAGE,
) -> dict[str, Any]:
    """The context keys (see the module docstring) of slice ``index`` along spatial ``axis``.

    Args:
        item: the loaded channel-first volume item (``(C, X, Y, Z)`` under ``image_key`` / ``label_key``) or, for
            a 2D item, the 2D item itself (every neighbour is then outside: clamped labels, null previous image).
        slice_item: the slice item already cut from ``item`` (its 2D tensors give the metadata and shapes).
        axis: spatial slicing axis.
        index: slice index along ``axis`` (ignored for 2D items).
        context_slices: neighbours ``k`` on each side (0: no neighbour labels).
        previous_image: add the previous slice's image.
        image_key: image key.
        label_key: label key.
        null_value: value of the previous image where there is none.
    """
    label, image = item.get(label_key), item.get(image_key)
    lab2d, img2d = slice_item.get(label_key), slice_item.get(image_key)
    offsets = neighbour_offsets(context_slices)
    out: dict[str, Any] = {}
    volume = label is not None and label.ndim == 4
    n = label.shape[axis + 1] if volume else 1
    if lab2d is not None and offsets:
        if volume:
            idx = [min(max(index + o, 0), n - 1) for o in offsets]
            ctx = torch.as_tensor(label).index_select(axis + 1, torch.as_tensor(idx, dtype=torch.long))
            ctx = ctx[0].movedim(axis, 0).clone()
            valid = torch.as_tensor([0 <= index + o < n for o in offsets], dtype=torch.bool)
        else:
            ctx = torch.as_tensor(lab2d).expand(len(offsets), *lab2d.shape[1:]).clone()
            valid = torch.zeros(len(offsets), dtype=torch.bool)
        out[CONTEXT_LABEL_KEY] = _like(torch.as_tensor(ctx), lab2d)
        out[CONTEXT_VALID_KEY] = valid
    if previous_image and img2d is not None and image is not None and image is not label:
        has_prev = bool(image.ndim == 4 and index >= 1)
        if has_prev:
            prev = torch.as_tensor(image).select(axis + 1, index - 1).clone()
        else:
            prev = torch.full(tuple(img2d.shape), float(null_value), dtype=torch.as_tensor(img2d).dtype)
        out[PREVIOUS_IMAGE_KEY] = _like(prev, img2d)
        out[PREVIOUS_VALID_KEY] = torch.tensor(has_prev)
    return out


def fit_context(
    slice_item: Mapping[str, Any],
    slice_transform: Callable | None,
    image_key: str = "image",
    label_key: str = "label",
    null_value: float = NULL_IMAGE,
) -> dict[str, Any]:
    """Apply the slice's deterministic 2D ``slice_transform`` (resize, pad) to its context keys too.

    The transform is run a second time on a copy of the item whose ``image`` / ``label`` are the previous image and
    the neighbour labels, so any deterministic image/label transform fits them exactly as it fits the slice. The
    first slice's null previous image is rebuilt at the fitted size (padding would otherwise mix the null value with
    the transform's pad value).

    Args:
        slice_item: a slice item with the context keys (already fitted itself or not: only the context is fitted).
        slice_transform: the dataset's ``slice_transform`` (None: nothing to do).
        image_key: image key the transform acts on.
        label_key: label key the transform acts on.
        null_value: value of a missing previous image.
    """
    d = dict(slice_item)
    if slice_transform is None or not any(k in d for k in (CONTEXT_LABEL_KEY, PREVIOUS_IMAGE_KEY)):
        return d
    proxy = {k: v for k, v in d.items() if k not in (image_key, label_key, *CONTEXT_KEYS)}
    if PREVIOUS_IMAGE_KEY in d:
        proxy[image_key] = d[PREVIOUS_IMAGE_KEY]
    if CONTEXT_LABEL_KEY in d:
        proxy[label_key] = d[CONTEXT_LABEL_KEY]
    fitted = apply_transform(slice_transform, proxy)
    if CONTEXT_LABEL_KEY in d:
        d[CONTEXT_LABEL_KEY] = fitted[label_key]
    if PREVIOUS_IMAGE_KEY in d:
        prev = fitted[image_key]
        if not bool(d.get(PREVIOUS_VALID_KEY, True)):
            prev = torch.full_like(prev, float(null_value))
        d[PREVIOUS_IMAGE_KEY] = prev
    return d
