"""Mask conditioning transforms: encoding, random class ablation, condition dropout.

Random mask ablation follows Konz et al., "Anatomically-Controllable Medical Image Generation with
Segmentation-Guided Diffusion Models" (arXiv 2402.05210): each foreground class is dropped independently, so a
model learns to condition on incomplete masks.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from enum import Enum
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, RandomizableTransform
from monai.utils import get_seed

__all__ = [
    "MaskEncoding",
    "NULL_CONDITION",
    "mask_channels",
    "encode_mask",
    "ablate_classes",
    "EncodeMaskd",
    "RandMaskAblationd",
    "BatchMaskAblation",
    "RandConditionDropoutd",
]

#: value that fills a dropped ("unconditional") condition, as MONAI's ``DiffusionInferer.sample(cfg_fill_value)``
NULL_CONDITION = -1.0


class MaskEncoding(str, Enum):
    """How an integer mask becomes network input channels."""

    ONEHOT = "onehot"  # C channels, one per class (background included); an ablated class is all-zero
    FAITHFUL = "faithful"  # 1 channel holding class_id / 255, as the reference implementation


def mask_channels(num_classes: int, encoding: MaskEncoding | str = MaskEncoding.ONEHOT) -> int:
    """Number of condition channels for ``num_classes`` classes."""
    return num_classes if MaskEncoding(encoding) == MaskEncoding.ONEHOT else 1


def encode_mask(
    label: torch.Tensor, num_classes: int, encoding: MaskEncoding | str = MaskEncoding.ONEHOT
) -> torch.Tensor:
    """Encode a channel-first integer mask ``(1, *spatial)`` or batch ``(B, 1, *spatial)`` as float channels."""
    lab = torch.as_tensor(label)
    if MaskEncoding(encoding) == MaskEncoding.FAITHFUL:
        return lab.float() / 255.0
    lab = lab.long()
    if lab.min() < 0 or lab.max() >= num_classes:
        raise ValueError(f"mask values must be in 0..{num_classes - 1}, found {lab.min().item()}..{lab.max().item()}")
    ch_dim = 1 if lab.ndim >= 4 else 0
    onehot = torch.nn.functional.one_hot(lab.squeeze(ch_dim), num_classes)  # (..., C) channel last
    return onehot.movedim(-1, ch_dim).float()


def ablate_classes(
    cond: torch.Tensor,
    drop: torch.Tensor,
    encoding: MaskEncoding | str = MaskEncoding.ONEHOT,
    batched: bool | None = None,
) -> torch.Tensor:
    """Remove classes from an encoded mask.

    Args:
        cond: encoded mask, ``(C_enc, *spatial)`` or, when ``batched``, ``(B, C_enc, *spatial)``.
        drop: boolean ``(num_classes,)`` (one pattern) or ``(B, num_classes)`` (per sample): which classes to
            drop; index 0 (background) is never dropped.
        encoding: the encoding of ``cond``. One-hot: the dropped class channel is zeroed (its pixels become
            "unknown", distinct from background). Faithful: the class's pixels are set to 0 (background), as the
            reference does.
        batched: whether ``cond`` has a batch dimension (default: when ``drop`` is 2D).
    """
    batched = drop.ndim == 2 if batched is None else batched
    drop = drop.clone().bool().to(cond.device)
    drop[..., 0] = False
    if batched and drop.ndim == 1:
        drop = drop[None].expand(cond.shape[0], -1)
    if MaskEncoding(encoding) == MaskEncoding.ONEHOT:
        keep = (~drop).to(cond.dtype)
        keep = keep.reshape(*keep.shape, *([1] * (cond.ndim - keep.ndim)))
        return cond * keep
    out = cond.clone()
    classes = torch.round(cond * 255.0).long()
    if not batched:
        out, classes, drop = out[None], classes[None], drop[None]
    for b in range(out.shape[0]):
        for c in torch.nonzero(drop[b]).flatten().tolist():
            out[b][classes[b] == c] = 0.0
    return out if batched else out[0]


def _draw_drop(rng: np.random.RandomState, num_classes: int, prob: float) -> torch.Tensor:
    drop = torch.from_numpy(rng.random_sample(num_classes) < prob)
    drop[0] = False
    return drop


class EncodeMaskd(MapTransform):
    """Encode the integer mask under ``keys`` into ``output_key`` (one-hot or faithful).

    Args:
        keys: integer mask key (one key).
        num_classes: classes including background.
        encoding: :class:`MaskEncoding`.
        output_key: key of the encoded condition.
        allow_missing_keys: skip missing keys.
    """

    def __init__(
        self,
        keys: KeysCollection = "label",
        num_classes: int = 2,
        encoding: MaskEncoding | str = MaskEncoding.ONEHOT,
        output_key: str = "cond",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.num_classes = num_classes
        self.encoding = MaskEncoding(encoding)
        self.output_key = output_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            lab = d[key]
            lab = lab.as_tensor() if hasattr(lab, "as_tensor") else torch.as_tensor(lab)
            d[self.output_key] = encode_mask(lab, self.num_classes, self.encoding)
        return d


class RandMaskAblationd(RandomizableTransform, MapTransform):
    """Random mask ablation, per sample: each foreground class is dropped independently with ``prob``.

    With ``prob=0.5`` every one of the ``2^(C-1)`` subsets of foreground classes is equally likely; the
    background encoding is never dropped. ``apply_prob`` is the fraction of samples ablated at all (1.0 as in
    the reference training).

    Args:
        keys: encoded condition key(s).
        num_classes: classes including background.
        encoding: encoding of the condition.
        prob: per-class drop probability.
        apply_prob: probability that a sample is ablated at all.
        allow_missing_keys: skip missing keys.
    """

    def __init__(
        self,
        keys: KeysCollection = "cond",
        num_classes: int = 2,
        encoding: MaskEncoding | str = MaskEncoding.ONEHOT,
        prob: float = 0.5,
        apply_prob: float = 1.0,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob=apply_prob)
        self.num_classes = num_classes
        self.encoding = MaskEncoding(encoding)
        self.class_prob = prob
        self.drop = torch.zeros(num_classes, dtype=torch.bool)

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)
        self.drop = (
            _draw_drop(self.R, self.num_classes, self.class_prob)
            if self._do_transform
            else torch.zeros(self.num_classes, dtype=torch.bool)
        )

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize()
        if not self._do_transform or not bool(self.drop.any()):
            return d
        for key in self.key_iterator(d):
            d[key] = ablate_classes(torch.as_tensor(d[key]), self.drop, self.encoding)
        return d


class BatchMaskAblation(RandomizableTransform):
    """Random mask ablation per batch (the reference behaviour): one drop pattern for the whole batch.

    Called on a batched condition ``(B, C_enc, *spatial)``; use it as ``batch_transform`` of
    :class:`~monai_siamese.engines.ConditionalDiffusionPrepareBatch`.

    Args:
        num_classes: classes including background.
        encoding: encoding of the condition.
        prob: per-class drop probability.
        apply_prob: probability that a batch is ablated at all.
        null_value: condition value of dropped-out (unconditional) samples, left untouched.
        seed: seed of its own random state (default: MONAI's global seed of ``set_determinism``); it never shares
            the class-level random state of MONAI transforms, so a checkpoint can hold and restore it.
    """

    def __init__(
        self,
        num_classes: int,
        encoding: MaskEncoding | str = MaskEncoding.ONEHOT,
        prob: float = 0.5,
        apply_prob: float = 1.0,
        null_value: float = NULL_CONDITION,
        seed: int | None = None,
    ) -> None:
        RandomizableTransform.__init__(self, prob=apply_prob)
        self.set_random_state(seed=seed if seed is not None else get_seed())
        self.num_classes = num_classes
        self.encoding = MaskEncoding(encoding)
        self.class_prob = prob
        self.null_value = null_value

    def __call__(self, cond: torch.Tensor) -> torch.Tensor:
        self.randomize(None)
        if not self._do_transform:
            return cond
        drop = _draw_drop(self.R, self.num_classes, self.class_prob).to(cond.device)
        if not bool(drop.any()):
            return cond
        null = (cond == self.null_value).flatten(1).all(1)
        out = ablate_classes(cond, drop, self.encoding, batched=True)
        out[null] = cond[null]
        return out


class RandConditionDropoutd(RandomizableTransform, MapTransform):
    """Replace the whole condition by :data:`NULL_CONDITION` with probability ``prob`` (for classifier-free
    guidance at sampling).

    Args:
        keys: condition key(s).
        prob: dropout probability.
        fill_value: value of the null condition.
        allow_missing_keys: skip missing keys.
    """

    def __init__(
        self,
        keys: KeysCollection = "cond",
        prob: float = 0.1,
        fill_value: float = NULL_CONDITION,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob=prob)
        self.fill_value = fill_value

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize(None)
        if not self._do_transform:
            return d
        for key in self.key_iterator(d):
            d[key] = torch.full_like(torch.as_tensor(d[key]), self.fill_value)
        return d


def class_presence(cond: torch.Tensor, num_classes: int, encoding: MaskEncoding | str) -> Sequence[bool]:
    """Which classes a (single) encoded condition still contains, for tests and reports."""
    if MaskEncoding(encoding) == MaskEncoding.ONEHOT:
        return [bool(cond[c].any()) for c in range(num_classes)]
    classes = torch.round(cond * 255).long()
    return [bool((classes == c).any()) for c in range(num_classes)]
