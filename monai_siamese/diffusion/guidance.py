"""Classifier-free guidance (Ho & Salimans, arXiv 2207.12598): ``out = out_u + s (out_c - out_u)``, for a mask
condition (the null condition replaces the mask) and, in the diffusers backend, for a text prompt."""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["guidance_combine", "guided_prediction"]


def guidance_combine(conditional: torch.Tensor, unconditional: torch.Tensor, scale: float) -> torch.Tensor:
    """``unconditional + scale * (conditional - unconditional)``: 1 = the conditional output, 0 = the unconditional."""
    return unconditional + scale * (conditional - unconditional)


def guided_prediction(
    denoiser: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    timesteps: torch.Tensor,
    cond: torch.Tensor,
    null_cond: torch.Tensor | None,
    scale: float = 1.0,
) -> torch.Tensor:
    """One guided model evaluation: with ``scale == 1`` (or no null condition) one plain pass, else the conditional
    and unconditional passes in one batch, combined by :func:`guidance_combine`.

    Args:
        denoiser: ``out = denoiser(x_t, timesteps, cond)``.
        x: ``x_t``.
        timesteps: ``(B,)``.
        cond: the condition batch.
        null_cond: the unconditional condition (same shape as ``cond``), what the model saw when the condition was
            dropped in training.
        scale: guidance scale.
    """
    if scale == 1.0 or null_cond is None:
        return denoiser(x, timesteps, cond)
    out = denoiser(torch.cat([x, x]), torch.cat([timesteps, timesteps]), torch.cat([cond, null_cond]))
    out_c, out_u = out.chunk(2)
    return guidance_combine(out_c, out_u, scale)
