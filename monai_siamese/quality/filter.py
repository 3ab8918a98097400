"""Automated quality filter for generated pairs (MedDiff-FT's "automated quality assessment protocol").

The paper names a filter that "filters suboptimal outputs using feature-space metrics"; this design is ours.
A generated pair is rejected, with the first failing reason counted, when

- ``faithfulness``: a segmenter trained on the real data disagrees with the conditioning mask (mean foreground
  Dice below ``dice_threshold``);
- ``outlier``: its feature vector (pooled segmenter-encoder features) is an outlier against the real set: the
  distance to its ``k``-th nearest real neighbour exceeds the ``percentile`` of the real-to-real ``k``-th
  neighbour distances;
- ``intensity``: the mean intensity of a class inside its mask lies outside the prediction interval of the same
  statistic over the real pairs: mean +- ``intensity_sigma`` standard deviations for many real pairs, widened for
  few (Student's t quantile of the same two-sided coverage times ``sqrt(1 + 1/n)``, see
  :func:`prediction_half_width`). The plug-in mean +- 3 sd of 4 or 8 pairs covers far fewer than 99.7 % of real
  pairs (the sd of so few is itself uncertain): at N = 8 it rejected 39 of 64 MedDiff-FT samples of the demo.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from enum import Enum
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["QualityTest", "FeatureSpaceQualityFilter", "per_class_dice", "class_means", "prediction_half_width"]


class QualityTest(str, Enum):
    FAITHFULNESS = "faithfulness"
    OUTLIER = "outlier"
    INTENSITY = "intensity"


def per_class_dice(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Dice per sample and foreground class, ``(B, num_classes - 1)``; NaN where the class is absent from both.

    Unlike :func:`~monai_siamese.quality.per_class_scores` (MONAI ``DiceMetric`` with ``ignore_empty``, NaN whenever
    the mask lacks the class), a class the segmenter finds but the conditioning mask lacks scores 0 here: the filter
    must reject a sample that shows a structure its mask does not have."""
    b = pred.shape[0]
    p = F.one_hot(pred.reshape(b, -1).long(), num_classes).float()
    t = F.one_hot(target.reshape(b, -1).long(), num_classes).float()
    inter = (p * t).sum(1)
    denom = p.sum(1) + t.sum(1)
    dice = torch.where(denom > 0, 2 * inter / denom.clamp(min=1e-8), torch.full_like(denom, float("nan")))
    return dice[:, 1:]


def class_means(images: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Mean intensity (over channels) of each class inside its mask, ``(B, num_classes)``; NaN for absent classes."""
    b = images.shape[0]
    img = images.float().mean(1).reshape(b, -1)
    lab = labels.reshape(b, -1).long()
    out = torch.full((b, num_classes), float("nan"))
    for c in range(num_classes):
        m = (lab == c).float()
        n = m.sum(1)
        out[:, c] = torch.where(n > 0, (img * m).sum(1) / n.clamp(min=1), torch.full_like(n, float("nan"))).cpu()
    return out


def prediction_half_width(std: torch.Tensor, count: torch.Tensor, sigma: float) -> torch.Tensor:
    """Half-width of the two-sided prediction interval for one new observation of a normal statistic whose mean and
    standard deviation ``std`` were estimated from ``count`` observations, at the coverage of +- ``sigma`` standard
    deviations of a normal (``sigma`` 3: 99.73 %): ``t_{n-1}(q) * std * sqrt(1 + 1/n)``, ``q = Phi(sigma)``.

    It tends to ``sigma * std`` as ``count`` grows (n = 100: 3.1 sd); for n = 16 it is 3.7 sd, n = 8 4.8 sd,
    n = 4 10.3 sd.
    ``count`` below 2 gives an infinite width (one observation says nothing about the spread)."""
    from scipy import stats

    n = count.double()
    q = float(stats.norm.cdf(sigma))
    t = torch.as_tensor(stats.t.ppf(q, (n - 1).clamp(min=1).numpy()), dtype=torch.float64)
    half = t * std.double() * torch.sqrt(1 + 1 / n.clamp(min=1))
    return torch.where(n >= 2, half, torch.full_like(half, float("inf"))).to(std.dtype)


class FeatureSpaceQualityFilter:
    """Quality filter ``[(accepted, reason), ...] = filter(images, labels, items)`` for
    :class:`~monai_siamese.inferers.PairGenerator` (see the module docstring for the tests).

    Args:
        segmenter: segmentation network (logits ``(B, num_classes, *spatial)``), trained on the real data.
        feature_fn: pooled encoder features ``(B, D)`` of an image batch (e.g. from the segmenter's encoder).
        real_images: real images ``(N, C, *spatial)`` in the model's intensity scale.
        real_labels: their integer masks ``(N, 1, *spatial)``.
        num_classes: classes including background.
        tests: which tests run (names of :class:`QualityTest`).
        dice_threshold: minimum mean foreground Dice of the segmenter's prediction against the conditioning mask.
        k: neighbour rank of the outlier test.
        percentile: percentile of the real-to-real distances used as the outlier threshold.
        intensity_sigma: coverage of the accepted per-class intensity band, in standard deviations of a normal
            (the band is the small-sample prediction interval of that coverage, :func:`prediction_half_width`).
        input_size: spatial size the segmenter expects (images and masks are resized to it), None = as given.
        device: device of the segmenter.
    """

    def __init__(
        self,
        segmenter: nn.Module | None,
        feature_fn: Callable[[torch.Tensor], torch.Tensor] | None,
        real_images: torch.Tensor,
        real_labels: torch.Tensor,
        num_classes: int,
        tests: Sequence[str] = ("faithfulness", "outlier", "intensity"),
        dice_threshold: float = 0.7,
        k: int = 3,
        percentile: float = 95.0,
        intensity_sigma: float = 3.0,
        input_size: Sequence[int] | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        self.tests = [QualityTest(t) for t in tests]
        if QualityTest.FAITHFULNESS in self.tests and segmenter is None:
            raise ValueError("the faithfulness test needs a segmenter")
        if QualityTest.OUTLIER in self.tests and feature_fn is None:
            raise ValueError("the outlier test needs a feature function")
        self.segmenter = segmenter.eval() if segmenter is not None else None
        self.feature_fn = feature_fn
        self.num_classes = num_classes
        self.dice_threshold = dice_threshold
        self.k = k
        self.percentile = percentile
        self.intensity_sigma = intensity_sigma
        self.input_size = tuple(input_size) if input_size is not None else None
        self.device = torch.device(device)
        self.counts: dict[str, int] = {t.value: 0 for t in self.tests}
        real_images, real_labels = self._fit_size(real_images.float(), real_labels)
        if QualityTest.OUTLIER in self.tests:
            n = real_images.shape[0]
            if n <= self.k:
                raise ValueError(f"the outlier test needs more than k={self.k} real images, got {n}")
            self.real_features = self._features(real_images)
            d = torch.cdist(self.real_features, self.real_features)
            d.fill_diagonal_(float("inf"))
            kth = d.kthvalue(self.k, dim=1).values
            self.distance_threshold = float(torch.quantile(kth, self.percentile / 100.0))
        if QualityTest.INTENSITY in self.tests:
            means = class_means(real_images, real_labels, num_classes)
            self.intensity_mean = torch.nanmean(means, 0)
            centered = torch.where(torch.isnan(means), torch.zeros_like(means), means - self.intensity_mean)
            count = (~torch.isnan(means)).sum(0)
            std = (centered.pow(2).sum(0) / (count.clamp(min=2) - 1)).sqrt()
            self.intensity_half_width = prediction_half_width(std, count, self.intensity_sigma)

    def _fit_size(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.input_size is None or tuple(images.shape[2:]) == self.input_size:
            return images, labels
        mode = "bilinear" if images.ndim == 4 else "trilinear"
        img = F.interpolate(images, size=self.input_size, mode=mode, align_corners=False)
        lab = F.interpolate(labels.float(), size=self.input_size, mode="nearest").long()
        return img, lab

    @torch.no_grad()
    def _features(self, images: torch.Tensor) -> torch.Tensor:
        return self.feature_fn(images.to(self.device)).float().cpu()

    @torch.no_grad()
    def __call__(
        self, images: torch.Tensor, labels: torch.Tensor, items: Sequence[Mapping] | None = None
    ) -> list[tuple[bool, str | None]]:
        images, labels = self._fit_size(images.float(), labels)
        b = images.shape[0]
        reasons: list[str | None] = [None] * b
        for test in self.tests:
            if test == QualityTest.FAITHFULNESS:
                pred = self.segmenter(images.to(self.device)).argmax(1).cpu()
                fail = torch.nanmean(per_class_dice(pred, labels.cpu(), self.num_classes), 1) < self.dice_threshold
            elif test == QualityTest.OUTLIER:
                d = torch.cdist(self._features(images), self.real_features)
                kth = d.kthvalue(min(self.k, d.shape[1]), dim=1).values
                fail = kth > self.distance_threshold
            else:
                means = class_means(images, labels, self.num_classes)
                dev = (means - self.intensity_mean).abs() > self.intensity_half_width + 1e-6
                fail = (dev & ~torch.isnan(means)).any(1)
            for i in range(b):
                if reasons[i] is None and bool(fail[i]):
                    reasons[i] = test.value
                    self.counts[test.value] += 1
        return [(r is None, r) for r in reasons]


class _LogitsModule(nn.Module):
    """A :class:`~monai_siamese.quality.Segmenter` as a module returning logits at the input's size."""

    def __init__(self, segmenter: Any) -> None:
        super().__init__()
        self.segmenter = segmenter

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.segmenter.predict_logits(images.cpu())


def build_quality_filter(
    real_dataset: Sequence[Mapping],
    num_classes: int,
    segmenter: nn.Module | str | os.PathLike | Any | None = None,
    feature_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    tests: Sequence[str] | None = None,
    image_key: str = "image",
    label_key: str = "label",
    **kwargs,
) -> FeatureSpaceQualityFilter:
    """A :class:`FeatureSpaceQualityFilter` fitted on the items of ``real_dataset`` (e.g. the real pairs the
    generator was fine-tuned on). Without ``tests``, every test whose ingredients are given runs: ``intensity``
    always, ``faithfulness`` with a segmenter, ``outlier`` with a feature function.

    ``segmenter`` may be a network (logits), a :class:`~monai_siamese.quality.Segmenter` or the path of a trained
    segmentation bundle / checkpoint (loaded with :func:`~monai_siamese.quality.load_segmenter`); a
    :class:`~monai_siamese.quality.Segmenter` also gives the feature function (its pooled encoder features) when
    ``feature_fn`` is None. Its network size is handled by the segmenter (images are resized to it)."""
    if isinstance(segmenter, (str, os.PathLike)):
        from monai_siamese.quality.segmenter import load_segmenter

        segmenter = load_segmenter(segmenter, device=kwargs.get("device"))
    if hasattr(segmenter, "predict_logits") and hasattr(segmenter, "features"):
        if feature_fn is None:
            feature_fn = segmenter.features
        segmenter = _LogitsModule(segmenter)
    images = torch.stack([torch.as_tensor(d[image_key]).float() for d in real_dataset])
    labels = torch.stack([torch.as_tensor(d[label_key]).long() for d in real_dataset])
    if tests is None:
        tests = [t for t, ok in (("faithfulness", segmenter), ("outlier", feature_fn)) if ok is not None]
        tests.append("intensity")
    return FeatureSpaceQualityFilter(segmenter, feature_fn, images, labels, num_classes, tests=tests, **kwargs)
