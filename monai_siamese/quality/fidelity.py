"""Fidelity and diversity of generated images: FID and KID on chosen features, MS-SSIM between samples.

Features come from the segmenter trained on the real data (its pooled encoder, see
:meth:`~monai_siamese.quality.Segmenter.features`) or, when the user supplies a local weights file, from an
Inception network (:class:`InceptionFeatures`). Nothing is downloaded.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.metrics import FIDMetric
from monai.metrics.regression import compute_ms_ssim

__all__ = [
    "MS_SSIM_WEIGHTS",
    "frechet_distance",
    "kernel_inception_distance",
    "ms_ssim_kernel_size",
    "ms_ssim_settings",
    "mean_pairwise_ms_ssim",
    "InceptionFeatures",
]

#: the five scale weights of Wang et al. 2003 (MONAI's default)
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def frechet_distance(real: torch.Tensor, synthetic: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets ``(N, F)`` (FID on those features), with
    MONAI's ``FIDMetric``. Needs at least 2 samples per set; with fewer samples than feature dimensions the
    covariances are singular and the value is biased upwards (compare values at equal set sizes only)."""
    if real.shape[0] < 2 or synthetic.shape[0] < 2:
        raise ValueError("FID needs at least 2 samples in each set")
    return float(FIDMetric()(synthetic.double(), real.double()))


def kernel_inception_distance(
    real: torch.Tensor,
    synthetic: torch.Tensor,
    num_subsets: int = 100,
    subset_size: int = 1000,
    degree: int = 3,
    coef0: float = 1.0,
    seed: int = 0,
) -> tuple[float, float]:
    """KID (Binkowski et al. 2018): unbiased MMD² with the polynomial kernel ``(x·y / d + coef0) ** degree``,
    averaged over random subsets; returns ``(mean, std)``.

    Written here because MONAI's ``MMDMetric`` uses a linear kernel on flattened inputs; KID's cubic kernel is
    what makes it comparable with published KID values.

    Args:
        real: ``(M, F)`` features.
        synthetic: ``(N, F)`` features.
        num_subsets: random subsets averaged.
        subset_size: samples per subset (capped at the smaller set).
        degree: polynomial degree.
        coef0: polynomial offset.
        seed: subset sampling seed.
    """
    x, y = real.double(), synthetic.double()
    m = min(x.shape[0], y.shape[0], subset_size)
    if m < 2:
        raise ValueError("KID needs at least 2 samples in each set")
    d = x.shape[1]
    gen = torch.Generator().manual_seed(seed)
    vals = []
    for _ in range(num_subsets):
        a = x[torch.randperm(x.shape[0], generator=gen)[:m]]
        b = y[torch.randperm(y.shape[0], generator=gen)[:m]]
        kxx = (a @ a.T / d + coef0) ** degree
        kyy = (b @ b.T / d + coef0) ** degree
        kxy = (a @ b.T / d + coef0) ** degree
        mmd = (kxx.sum() - kxx.diagonal().sum() + kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
        vals.append(float(mmd - 2 * kxy.mean()))
    t = torch.tensor(vals)
    return float(t.mean()), float(t.std()) if len(vals) > 1 else 0.0


def ms_ssim_kernel_size(spatial_size: Sequence[int], num_scales: int = len(MS_SSIM_WEIGHTS), max_size: int = 11) -> int:
    """Largest odd Gaussian window (at most ``max_size``) that MONAI's ``MultiScaleSSIMMetric`` accepts at this
    image size with ``num_scales`` scales.

    MONAI requires ``min(H, W) // (num_scales - 1) ** 2 > kernel_size - 1``; with the standard 5 scales that is
    ``min(H, W) // 16``: 11 from 176 px up, 7 at 128 px, 3 at 64 px.

    Raises:
        ValueError: when even a 3-pixel window does not fit.
    """
    limit = min(int(s) for s in spatial_size) // max(1, (num_scales - 1)) ** 2
    k = min(max_size, limit)
    if k % 2 == 0:
        k -= 1
    if k < 3:
        raise ValueError(f"images of {tuple(spatial_size)} are too small for {num_scales}-scale MS-SSIM")
    return k


def ms_ssim_settings(
    spatial_size: Sequence[int], weights: Sequence[float] = MS_SSIM_WEIGHTS
) -> tuple[int, tuple[float, ...]]:
    """Window size and scale weights for MS-SSIM at this image size: all scales of ``weights`` with the largest
    window that fits (:func:`ms_ssim_kernel_size`); below 48 px, fewer scales (the first ones, weights
    renormalised to their original sum) with a 3-pixel window.

    Raises:
        ValueError: images too small even for 2 scales.
    """
    total = sum(weights)
    for n in range(len(weights), 1, -1):
        try:
            k = ms_ssim_kernel_size(spatial_size, n)
        except ValueError:
            continue
        w = tuple(weights[:n])
        return k, tuple(v * total / sum(w) for v in w) if n < len(weights) else w
    raise ValueError(f"images of {tuple(spatial_size)} are too small for MS-SSIM")


def mean_pairwise_ms_ssim(
    groups: Sequence[torch.Tensor],
    value_range: tuple[float, float] = (-1.0, 1.0),
    kernel_size: int | None = None,
    weights: Sequence[float] = MS_SSIM_WEIGHTS,
) -> float:
    """Diversity: mean MS-SSIM over all pairs of samples within each group (samples of one mask), averaged over
    pairs of all groups. 1 = identical samples; lower = more diverse.

    Window and scales follow :func:`ms_ssim_settings` of the image size (sigma scaled as ``1.5 * k / 11``): the five
    standard scales with an 11 / 7 / 3 pixel window at >= 176 / 128 / 64 pixels, fewer scales below 48 pixels.

    Args:
        groups: tensors ``(K, C, H, W)``, the ``K >= 2`` samples of one mask each (groups with fewer are skipped).
        value_range: intensity range of the images (mapped to [0, 1]).
        kernel_size: Gaussian window (default: see above).
        weights: scale weights.

    Returns:
        The mean, or NaN when no group has two samples.
    """
    lo, hi = value_range
    scores = []
    for g in groups:
        if g.shape[0] < 2:
            continue
        g = ((g.float() - lo) / (hi - lo)).clamp(0, 1)
        k, w = ms_ssim_settings(g.shape[2:], weights)
        k = kernel_size or k
        pairs = list(itertools.combinations(range(g.shape[0]), 2))
        i = torch.tensor([p[0] for p in pairs])
        j = torch.tensor([p[1] for p in pairs])
        # the function behind MONAI's MultiScaleSSIMMetric, called directly: one value per pair, no buffers
        ms = compute_ms_ssim(
            g[i], g[j], spatial_dims=2, data_range=1.0, kernel_size=k, kernel_sigma=1.5 * k / 11, weights=w
        )
        scores.append(ms.flatten())
    if not scores:
        return float("nan")
    return float(torch.cat(scores).mean())


class InceptionFeatures:
    """Inception-v3 pool features from a local TorchScript file (e.g. ``inception-2015-12-05.pt``, the network
    behind the standard FID), for an Inception FID next to the segmenter-feature FID.

    Only used when the user passes a file: nothing is downloaded, and torchvision is not needed. The file is a
    TorchScript archive loaded with ``torch.jit.load`` (it holds code as well as weights: use files you trust).
    Images in ``value_range`` are mapped to 0..255, grey is replicated to RGB and resized to 299 x 299; the module
    is called with ``return_features=True`` when it accepts it (the StyleGAN/clean-fid export), else plainly.

    Args:
        path: the TorchScript file.
        device: device.
        value_range: intensity range of the input images.
        size: input size of the network.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        device: torch.device | str = "cpu",
        value_range: tuple[float, float] = (-1.0, 1.0),
        size: int = 299,
    ) -> None:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: Inception weights file not found")
        self.model = torch.jit.load(str(path), map_location=device).eval()
        self.device = torch.device(device)
        self.value_range = value_range
        self.size = size

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
        lo, hi = self.value_range
        out = []
        for start in range(0, images.shape[0], batch_size):
            x = images[start : start + batch_size].float().to(self.device)
            x = ((x - lo) / (hi - lo)).clamp(0, 1) * 255
            if x.shape[1] == 1:
                x = x.repeat(1, 3, 1, 1)
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
            try:
                f = self.model(x, return_features=True)
            except (RuntimeError, TypeError):
                f = self.model(x)
            out.append(torch.as_tensor(f).float().flatten(1).cpu())
        return torch.cat(out, 0)
