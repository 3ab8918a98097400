"""Conditioning wrappers: one denoiser interface ``eps = denoiser(x_t, timesteps, cond)`` for every method."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ConcatConditionedUNet"]


class ConcatConditionedUNet(nn.Module):
    """Segmentation-guided denoiser: the condition (encoded mask) is concatenated to the noisy image channel-wise
    at every step, as in Konz et al., arXiv 2402.05210.

    ``eps = unet(cat([x_t, cond], dim=1), t)``. Works with MONAI ``DiffusionModelUNet`` in 2D or 3D (its
    ``in_channels`` = image channels + condition channels).

    Args:
        unet: the denoising network.
    """

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.unet(torch.cat([x, cond.to(x.dtype)], dim=1), timesteps)
