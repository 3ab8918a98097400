"""Faithfulness: does a generated image show the anatomy of its conditioning mask? A segmenter trained on real data
segments the generated image; Dice per class against the mask (Konz et al., arXiv 2402.05210, section 4)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from monai.metrics import DiceMetric, MeanIoU
from monai.networks.utils import one_hot

__all__ = ["per_class_scores", "faithfulness_dice", "nanmean_per_class"]


def per_class_scores(
    pred: torch.Tensor, label: torch.Tensor, num_classes: int, include_background: bool = False
) -> dict[str, torch.Tensor]:
    """Dice and IoU per image and class between two class maps, with MONAI's ``DiceMetric`` / ``MeanIoU``.

    A class absent from ``label`` gives NaN for that image (``ignore_empty``), so averages are over the images
    where the class exists.

    Args:
        pred: ``(B, 1, H, W)`` predicted class map.
        label: ``(B, 1, H, W)`` reference class map.
        num_classes: classes including background.
        include_background: also score class 0.

    Returns:
        ``{"dice": (B, K), "iou": (B, K)}`` with ``K = num_classes - 1`` (or ``num_classes``).
    """
    p = one_hot(torch.as_tensor(pred).long(), num_classes)
    y = one_hot(torch.as_tensor(label).long(), num_classes)
    dice = DiceMetric(include_background=include_background, reduction="none", ignore_empty=True)(p, y)
    iou = MeanIoU(include_background=include_background, reduction="none", ignore_empty=True)(p, y)
    return {"dice": dice.float().cpu(), "iou": iou.float().cpu()}


def nanmean_per_class(scores: torch.Tensor) -> list[float]:
    """Mean over images of a ``(B, K)`` score table, ignoring NaN (classes absent from an image)."""
    return [float(v) for v in torch.nanmean(scores.float(), dim=0)]


def faithfulness_dice(
    segment: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    masks: torch.Tensor,
    num_classes: int,
    batch_size: int = 32,
) -> torch.Tensor:
    """Dice per image and foreground class between ``segment(images)`` and the conditioning ``masks``.

    Args:
        segment: ``(B, C, H, W)`` images in [-1, 1] -> ``(B, 1, H, W)`` class map, e.g. a
            :class:`~monai_siamese.quality.Segmenter`.
        images: generated images.
        masks: ``(B, 1, H, W)`` conditioning masks (class maps).
        num_classes: classes including background.
        batch_size: images per call of ``segment``.

    Returns:
        ``(B, num_classes - 1)`` Dice (NaN where the mask lacks the class).
    """
    preds = [segment(images[i : i + batch_size]) for i in range(0, images.shape[0], batch_size)]
    pred = torch.cat([torch.as_tensor(p) for p in preds], 0)
    if pred.ndim == 3:
        pred = pred[:, None]
    return per_class_scores(pred, masks, num_classes)["dice"]
