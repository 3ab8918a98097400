"""Label handling: integer class maps, 0/255 binary masks, explicit remaps, and clear errors."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

from monai_siamese.errors import InputError

__all__ = ["LabelValueError", "map_label_values", "LabelMapd", "source_name"]


class LabelValueError(InputError, ValueError):
    """A label holds values that cannot be mapped to ``0..num_classes-1``; the message names the file."""


def source_name(data: Any, default: str = "<array>") -> str:
    """Best-effort file name of a MetaTensor (``filename_or_obj``) for error messages."""
    if isinstance(data, MetaTensor):
        name = data.meta.get("filename_or_obj")
        if name:
            return str(name)
    return default


def _format_values(values: np.ndarray, limit: int = 12) -> str:
    vals = [int(v) if float(v).is_integer() else float(v) for v in values[:limit]]
    text = ", ".join(str(v) for v in vals)
    if len(values) > limit:
        text += f", ... ({len(values)} distinct values)"
    return "{" + text + "}"


def map_label_values(
    label: np.ndarray | torch.Tensor,
    num_classes: int,
    mapping: Mapping[int, int] | None = None,
    threshold: float | None = None,
    name: str = "<array>",
) -> np.ndarray:
    """Map a label array to integer classes ``0..num_classes-1`` or raise :class:`LabelValueError`.

    Rules, in order: an explicit ``mapping`` (original value -> class; values not listed must already be
    valid classes); else, when ``threshold`` is given, a binary mask ``label > threshold`` (for lossy JPEG
    masks); else a mask whose values are a subset of ``{0, 255}`` is mapped to ``{0, 1}``. Any value left
    outside ``0..num_classes-1`` (or non-integer) is an error naming ``name`` and the values found.

    Args:
        label: label array (any shape).
        num_classes: number of classes including background.
        mapping: optional explicit value remap.
        threshold: optional binarisation threshold.
        name: file name used in error messages.
    """
    arr = label.detach().cpu().numpy() if isinstance(label, torch.Tensor) else np.asarray(label)
    if not np.all(np.isfinite(arr)):
        raise LabelValueError(f"{name}: label contains NaN/Inf")
    if threshold is not None:
        return (arr > threshold).astype(np.int64)
    values = np.unique(arr)
    if mapping:
        out = arr.astype(np.int64, copy=True)
        for src, dst in mapping.items():
            out[arr == float(src)] = int(dst)
        unmapped = np.setdiff1d(values, np.asarray([float(k) for k in mapping], dtype=values.dtype))
        bad = unmapped[(unmapped < 0) | (unmapped >= num_classes) | (np.mod(unmapped, 1) != 0)]
        if bad.size:
            raise LabelValueError(
                f"{name}: label values {_format_values(bad)} are not in the label mapping and not classes "
                f"0..{num_classes - 1} (values found: {_format_values(values)})"
            )
        return out
    if values.size and values.max() == 255 and set(values.tolist()) <= {0.0, 255.0}:
        return (arr == 255).astype(np.int64)
    bad = values[(values < 0) | (values >= num_classes) | (np.mod(values, 1) != 0)]
    if bad.size:
        hint = ""
        if values.size > num_classes + 2 and values.max() > 200:
            hint = " (a lossy JPEG mask? set label_threshold=127)"
        raise LabelValueError(
            f"{name}: unexpected label values {_format_values(values)} for {num_classes} classes "
            f"(expected integers 0..{num_classes - 1}, or a 0/255 binary mask){hint}"
        )
    return arr.astype(np.int64)


class LabelMapd(MapTransform):
    """Turn labels into single-channel integer class maps ``0..num_classes-1``.

    Accepts channel-first labels. A multi-channel label (RGB PNG mask) is reduced to one channel when all
    channels are equal; otherwise it is an error. Values follow :func:`map_label_values`.

    Args:
        keys: label keys.
        num_classes: number of classes including background.
        mapping: optional explicit ``{value: class}`` remap.
        threshold: optional binarisation threshold (lossy masks).
        allow_missing_keys: skip missing keys.
    """

    def __init__(
        self,
        keys: KeysCollection = "label",
        num_classes: int = 2,
        mapping: Mapping[int, int] | None = None,
        threshold: float | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2 (background + at least one class), got {num_classes}")
        self.num_classes = num_classes
        self.mapping = {int(k): int(v) for k, v in (mapping or {}).items()}
        self.threshold = threshold

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            lab = d[key]
            name = source_name(lab)
            if lab.ndim >= 3 and lab.shape[0] > 1:
                if not bool(torch.all(lab == lab[:1])):
                    raise LabelValueError(f"{name}: label has {lab.shape[0]} channels that differ (expected one)")
                lab = lab[:1]
            mapped = map_label_values(lab, self.num_classes, self.mapping, self.threshold, name=name)
            out = torch.as_tensor(mapped, dtype=torch.int64)
            d[key] = MetaTensor(out, meta=lab.meta) if isinstance(lab, MetaTensor) else out
        return d
