"""2.5D condition for slice-consistent volume generation: mask ‖ neighbour masks ‖ previous slice image.

A mask-conditioned 2D generator samples each slice of a volume on its own, so a volume pasted from its slices has
stripes in sagittal and coronal reformats. Conditioning each slice also on the masks of its neighbours (the anatomy
continues through the plane) and on the previous slice's image (texture and intensity continue; at sampling the
previously *generated* slice, so a volume is generated slice by slice in order) makes consecutive slices agree.
The same idea as the 2.5D inputs of slice-wise segmenters, here on the condition of the concat-conditioned denoiser
of Konz et al. (SegGuidedDiff, arXiv 2402.05210) or the hint of a ControlNet (Siamese-Diffusion, arXiv 2505.06068).

Channel layout of the condition (``k`` = ``context_slices``, ``M`` = :func:`~monai_siamese.transforms.mask_channels`)::

    [ mask (M) | neighbour -k (M) ... neighbour -1 (M) | neighbour +1 (M) ... neighbour +k (M) | previous image (C) ]

With ``k = 0`` and no previous image it is exactly :class:`~monai_siamese.transforms.EncodeMaskd`'s output.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from enum import Enum
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, RandomizableTransform

from monai_siamese.data.context import (
    CONTEXT_LABEL_KEY,
    CONTEXT_VALID_KEY,
    PREVIOUS_IMAGE_KEY,
    PREVIOUS_VALID_KEY,
)
from monai_siamese.transforms.mask import NULL_CONDITION, MaskEncoding, ablate_classes, encode_mask, mask_channels

__all__ = ["ContextEdge", "context_channels", "select_context", "encode_context", "ContextConditiond"]


class ContextEdge(str, Enum):
    """What a neighbour outside the volume (above the first slice, below the last) contributes to the condition."""

    CLAMP = "clamp"  # the edge slice's mask (anatomy assumed to continue; the default)
    NULL = "null"  # the null value in all of the neighbour's channels ("nothing known there")


def _previous(previous_image: bool | None, context_slices: int) -> bool:
    return context_slices > 0 if previous_image is None else bool(previous_image)


def context_channels(
    num_classes: int,
    context_slices: int = 0,
    encoding: MaskEncoding | str = MaskEncoding.ONEHOT,
    image_channels: int = 1,
    previous_image: bool | None = None,
) -> int:
    """Number of condition channels: ``M * (1 + 2k)`` mask channels plus ``image_channels`` for the previous image.

    Use it for ``in_channels = image_channels + context_channels(...)`` of
    :class:`~monai_siamese.networks.ConcatConditionedUNet`'s UNet, or the hint channels of a ControlNet.

    Args:
        num_classes: classes including background.
        context_slices: neighbours ``k`` on each side (0: none).
        encoding: mask encoding.
        image_channels: channels of the image (of the previous-slice channels).
        previous_image: whether the previous slice's image is part of the condition (default: when ``k > 0``).
    """
    if context_slices < 0:
        raise ValueError(f"context_slices must be >= 0, got {context_slices}")
    n = mask_channels(num_classes, encoding) * (1 + 2 * context_slices)
    return n + (image_channels if _previous(previous_image, context_slices) else 0)


def select_context(context_label: torch.Tensor, context_valid: torch.Tensor, context_slices: int) -> tuple:
    """The ``2k`` nearest neighbours of a context stored with ``2K >= 2k`` channels (``-K..-1, +1..+K``).

    Works on ``(2K, H, W)`` / ``(2K,)`` or batched ``(B, 2K, H, W)`` / ``(B, 2K)``.
    """
    stored = context_label.shape[-3] // 2
    if context_slices > stored:
        raise ValueError(
            f"the condition wants {context_slices} neighbour slices per side but the item holds {stored} "
            f"(set the dataset's context_slices >= {context_slices})"
        )
    idx = torch.as_tensor([*range(stored - context_slices, stored), *range(stored, stored + context_slices)])
    return context_label.index_select(-3, idx), context_valid.index_select(-1, idx.to(context_valid.device))


def encode_context(
    label: torch.Tensor,
    num_classes: int,
    context_label: torch.Tensor | None = None,
    context_valid: torch.Tensor | None = None,
    previous: torch.Tensor | None = None,
    previous_valid: torch.Tensor | bool | None = None,
    context_slices: int = 0,
    previous_image: bool | None = None,
    encoding: MaskEncoding | str = MaskEncoding.ONEHOT,
    edge: ContextEdge | str = ContextEdge.CLAMP,
    null_value: float = NULL_CONDITION,
    drop: torch.Tensor | None = None,
) -> torch.Tensor:
    """Build the 2.5D condition (see the module docstring), unbatched ``(1, H, W)`` or batched ``(B, 1, H, W)``.

    Args:
        label: the slice's integer mask.
        num_classes: classes including background.
        context_label: neighbour masks ``(2K, H, W)`` (``(B, 2K, H, W)``), ``K >= context_slices``.
        context_valid: ``(2K,)`` (``(B, 2K)``) False where a neighbour lies outside the volume.
        previous: previous slice image ``(C, H, W)`` (``(B, C, H, W)``) in [-1, 1].
        previous_valid: False (per sample) where there is no previous slice: its channels get ``null_value``.
        context_slices: neighbours ``k`` per side in the condition.
        previous_image: whether the previous image is part of the condition (default: when ``k > 0``).
        encoding: mask encoding.
        edge: what a neighbour outside the volume contributes (:class:`ContextEdge`).
        null_value: the null value (missing previous image, ``edge="null"`` neighbours).
        drop: optional boolean ``(num_classes,)`` class-ablation pattern applied to the mask and to every neighbour
            mask alike (see :func:`~monai_siamese.transforms.ablate_classes`).
    """
    batched = label.ndim == 4
    lab = torch.as_tensor(label)
    parts = [encode_mask(lab, num_classes, encoding)]
    m = parts[0].shape[-3]
    if context_slices > 0:
        if context_label is None or context_valid is None:
            raise ValueError(f"context_slices={context_slices} needs '{CONTEXT_LABEL_KEY}' and '{CONTEXT_VALID_KEY}'")
        ctx, valid = select_context(torch.as_tensor(context_label), torch.as_tensor(context_valid), context_slices)
        spatial = ctx.shape[-2:]
        flat = ctx.reshape(-1, 1, *spatial)  # every neighbour as a one-channel mask
        enc = encode_mask(flat, num_classes, encoding)  # (N * 2k, M, H, W)
        enc = enc.reshape(*ctx.shape[:-2][:-1], 2 * context_slices, m, *spatial)
        if ContextEdge(edge) == ContextEdge.NULL:
            keep = valid.to(enc.device).reshape(*valid.shape, 1, 1, 1)
            enc = torch.where(keep, enc, torch.full_like(enc, float(null_value)))
        parts.append(enc.reshape(*enc.shape[:-4], 2 * context_slices * m, *spatial))
    if drop is not None and bool(drop.any()):
        parts = [_ablate_groups(p, m, drop, encoding, batched, null_value) for p in parts]
    if _previous(previous_image, context_slices):
        if previous is None:
            raise ValueError(
                f"the condition includes the previous slice image but the item has no '{PREVIOUS_IMAGE_KEY}'"
            )
        prev = torch.as_tensor(previous).float().to(parts[0].device)
        if previous_valid is not None:
            pv = torch.as_tensor(previous_valid, dtype=torch.bool, device=prev.device)
            pv = pv.reshape(*pv.shape, *([1] * (prev.ndim - pv.ndim)))
            prev = torch.where(pv, prev, torch.full_like(prev, float(null_value)))
        parts.append(prev)
    return torch.cat([p.float() for p in parts], dim=-3)


def _ablate_groups(
    part: torch.Tensor, m: int, drop: torch.Tensor, encoding: MaskEncoding | str, batched: bool, null_value: float
) -> torch.Tensor:
    """Ablate every ``m``-channel mask group of ``part`` with the same pattern, leaving null-filled groups null."""
    groups = part.split(m, dim=-3)
    out = []
    for g in groups:
        null = (g == null_value).flatten(-3).all(-1)
        a = ablate_classes(g, drop, encoding, batched=batched)
        if bool(null.any()):
            nb = null.reshape(*null.shape, 1, 1, 1)
            a = torch.where(nb, g, a)
        out.append(a)
    return torch.cat(out, dim=-3)


class ContextConditiond(RandomizableTransform, MapTransform):
    """Encode a slice's mask, its neighbours' masks and the previous slice's image into one condition tensor.

    Reads the context keys that :class:`~monai_siamese.data.SliceDataset` (``context_slices=k``) adds; see the module
    docstring for the channel layout and :func:`context_channels` for the count. For training, the previous image is
    replaced by the null value with ``previous_dropout_prob`` (so the model also serves the first slice of a volume
    and learns not to copy its neighbour blindly) and may get Gaussian noise of ``previous_noise_std`` (so it copes
    with the small errors of a *generated* previous slice at sampling). Class ablation (Konz et al., arXiv
    2402.05210) can be applied here, with one drop pattern for the mask and all its neighbours; MONAI's per-batch
    ``BatchMaskAblation`` does not know the context layout and must not be used with it. Apply
    :class:`~monai_siamese.transforms.RandConditionDropoutd` after this transform for classifier-free guidance.

    Args:
        keys: the integer mask key (one key).
        num_classes: classes including background.
        context_slices: neighbours ``k`` per side in the condition (the item may hold more; the nearest are used).
        encoding: mask encoding.
        previous_image: include the previous slice image (default: when ``context_slices > 0``).
        edge: what a neighbour outside the volume contributes (:class:`ContextEdge`, default ``clamp``).
        previous_dropout_prob: probability of replacing the previous image by the null value (training).
        previous_noise_std: std of Gaussian noise added to a present previous image (training; [-1, 1] units).
        ablation_prob: per-class drop probability of mask ablation (0: off).
        ablation_apply_prob: probability that a sample is ablated at all.
        null_value: the null value (missing previous image, null neighbours).
        output_key: key of the condition.
        context_key: key of the neighbour masks.
        context_valid_key: key of the neighbour validity flags.
        previous_key: key of the previous image.
        previous_valid_key: key of the previous-image flag.
        missing_previous: an item without a previous image (mask-only input, e.g. 2D pair generation from label
            volumes with a consistent model): ``null`` gives it the null value, as the first slice of a volume
            (the default); ``error`` raises.
        image_channels: channels of the previous image when it is missing.
        allow_missing_keys: skip a missing mask key.
    """

    def __init__(
        self,
        keys: KeysCollection = "label",
        num_classes: int = 2,
        context_slices: int = 0,
        encoding: MaskEncoding | str = MaskEncoding.ONEHOT,
        previous_image: bool | None = None,
        edge: ContextEdge | str = ContextEdge.CLAMP,
        previous_dropout_prob: float = 0.0,
        previous_noise_std: float = 0.0,
        ablation_prob: float = 0.0,
        ablation_apply_prob: float = 1.0,
        null_value: float = NULL_CONDITION,
        output_key: str = "cond",
        context_key: str = CONTEXT_LABEL_KEY,
        context_valid_key: str = CONTEXT_VALID_KEY,
        previous_key: str = PREVIOUS_IMAGE_KEY,
        previous_valid_key: str = PREVIOUS_VALID_KEY,
        missing_previous: str = "null",
        image_channels: int = 1,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob=1.0)
        if context_slices < 0:
            raise ValueError(f"context_slices must be >= 0, got {context_slices}")
        self.num_classes = num_classes
        self.context_slices = int(context_slices)
        self.encoding = MaskEncoding(encoding)
        self.previous_image = _previous(previous_image, context_slices)
        self.edge = ContextEdge(edge)
        self.previous_dropout_prob = float(previous_dropout_prob)
        self.previous_noise_std = float(previous_noise_std)
        self.ablation_prob = float(ablation_prob)
        self.ablation_apply_prob = float(ablation_apply_prob)
        self.null_value = float(null_value)
        self.output_key = output_key
        self.context_key = context_key
        self.context_valid_key = context_valid_key
        self.previous_key = previous_key
        self.previous_valid_key = previous_valid_key
        if missing_previous not in ("null", "error"):
            raise ValueError(f"missing_previous must be 'null' or 'error', got {missing_previous!r}")
        self.missing_previous = missing_previous
        self.image_channels = image_channels

    @property
    def channels(self) -> int:
        """Condition channels this transform produces for a one-channel image (see :func:`context_channels`)."""
        return context_channels(self.num_classes, self.context_slices, self.encoding, 1, self.previous_image)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        # draw every random number up front, in a fixed order, so a seeded transform is reproducible
        drop_previous = bool(self.R.random_sample() < self.previous_dropout_prob)
        ablate = bool(self.R.random_sample() < self.ablation_apply_prob) and self.ablation_prob > 0
        drop = torch.from_numpy(self.R.random_sample(self.num_classes) < self.ablation_prob) if ablate else None
        if drop is not None:
            drop[0] = False
        for key in self.key_iterator(d):
            lab = d[key]
            lab = lab.as_tensor() if hasattr(lab, "as_tensor") else torch.as_tensor(lab)
            prev, prev_valid = None, None
            if self.previous_image:
                if self.previous_key in d:
                    prev = torch.as_tensor(d[self.previous_key]).float()
                    prev_valid = torch.as_tensor(d.get(self.previous_valid_key, True), dtype=torch.bool)
                elif self.missing_previous == "null":  # mask-only items (no image): like a volume's first slice
                    prev = torch.full((self.image_channels, *lab.shape[1:]), self.null_value)
                    prev_valid = torch.tensor(False)
                else:
                    raise KeyError(
                        f"ContextConditiond: the item has no '{self.previous_key}' (build the dataset with "
                        f"context_slices > 0 or previous_image=True, or set missing_previous='null')"
                    )
                if drop_previous:
                    prev_valid = torch.zeros_like(prev_valid)
                elif self.previous_noise_std > 0 and bool(prev_valid.all()):
                    noise = self.R.standard_normal(tuple(prev.shape)).astype(np.float32)
                    prev = prev + self.previous_noise_std * torch.from_numpy(noise)
            d[self.output_key] = encode_context(
                lab,
                self.num_classes,
                context_label=_plain(d.get(self.context_key)),
                context_valid=_plain(d.get(self.context_valid_key)),
                previous=prev,
                previous_valid=prev_valid,
                context_slices=self.context_slices,
                previous_image=self.previous_image,
                encoding=self.encoding,
                edge=self.edge,
                null_value=self.null_value,
                drop=drop,
            )
        return d


def _plain(x: Any) -> torch.Tensor | None:
    if x is None:
        return None
    return x.as_tensor() if hasattr(x, "as_tensor") else torch.as_tensor(x)
