"""What a diffusion network predicts and how to convert between predictions, for every noise process we use.

All our processes noise a clean sample ``x0`` as ``x_t = alpha_t x0 + sigma_t eps``:

- DDPM-family schedulers (MONAI ``DDPMScheduler``/``DDIMScheduler``, :class:`DPMSolverMultistepScheduler`):
  ``alpha_t = sqrt(abar_t)``, ``sigma_t = sqrt(1 - abar_t)`` with integer ``t`` in ``[0, T)``;
- rectified flow (MONAI ``RFlowScheduler``, Liu et al., arXiv 2209.03003; MAISI v2): ``alpha_t = 1 - t / T``,
  ``sigma_t = t / T`` with ``t`` in ``[0, T]`` (straight paths from data at 0 to noise at T).

A network predicts one of (:class:`PredictionType`): the noise ``eps``; the DDPM velocity
``v = alpha_t eps - sigma_t x0`` (Salimans & Ho, arXiv 2202.00512); the clean sample; or the flow velocity
``u = x0 - eps`` (the rectified-flow target, MONAI's convention: ``x_{t - dt} = x_t + u dt / T``). Every conversion
below goes through ``(alpha_t, sigma_t)``, so the samplers, the training targets and the Siamese-Diffusion online
augmentation share one piece of math.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

import torch

__all__ = [
    "PredictionType",
    "alpha_sigma",
    "add_noise",
    "predict_x0",
    "predict_eps",
    "diffusion_target",
    "snr",
    "min_snr_weight",
    "is_flow",
]


class PredictionType(str, Enum):
    """What the network predicts (``prediction_type`` of the bundles)."""

    EPSILON = "epsilon"  # the noise
    V_PREDICTION = "v_prediction"  # alpha eps - sigma x0 (DDPM family)
    SAMPLE = "sample"  # the clean sample
    FLOW = "flow"  # x0 - eps (rectified flow: the only prediction of MONAI's RFlowScheduler)


def is_flow(scheduler: Any) -> bool:
    """Whether ``scheduler`` runs a rectified-flow process (MONAI ``RFlowScheduler`` or one with its interface)."""
    from monai.networks.schedulers import RFlowScheduler

    return isinstance(scheduler, RFlowScheduler) or getattr(scheduler, "process", None) == "flow"


def alpha_sigma(scheduler: Any, timesteps: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(alpha_t, sigma_t)`` of ``scheduler`` at ``timesteps`` (``(B,)``), shaped to broadcast against ``like``
    (float32)."""
    t = torch.as_tensor(timesteps, device=like.device)
    if t.ndim == 0:
        t = t.expand(like.shape[0])
    shape = (-1,) + (1,) * (like.ndim - 1)
    if is_flow(scheduler):
        sigma = t.float() / float(scheduler.num_train_timesteps)
        return (1.0 - sigma).reshape(shape), sigma.reshape(shape)
    abar = scheduler.alphas_cumprod.to(device=like.device, dtype=torch.float32)[t.long()]
    return abar.sqrt().reshape(shape), (1.0 - abar).sqrt().reshape(shape)


def add_noise(scheduler: Any, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """``x_t = alpha_t x0 + sigma_t eps`` (what ``scheduler.add_noise`` does, for any dimensionality)."""
    a, s = alpha_sigma(scheduler, timesteps, x0)
    return (a * x0.float() + s * noise.float()).to(x0.dtype)


def _x0_and_eps(
    scheduler: Any, x_t: torch.Tensor, pred: torch.Tensor, timesteps: torch.Tensor, prediction_type: Any
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x0, eps)`` implied by a model output at ``(x_t, t)`` (float32): the one place every prediction type is
    converted."""
    a, s = alpha_sigma(scheduler, timesteps, x_t)
    x_t, pred = x_t.float(), pred.float()
    ptype = PredictionType(prediction_type)
    if ptype == PredictionType.EPSILON:
        return (x_t - s * pred) / a.clamp_min(1e-8), pred
    if ptype == PredictionType.V_PREDICTION:
        return a * x_t - s * pred, s * x_t + a * pred
    if ptype == PredictionType.FLOW:
        return x_t + s * pred, x_t - a * pred
    return pred, (x_t - a * pred) / s.clamp_min(1e-8)


def predict_x0(
    scheduler: Any,
    x_t: torch.Tensor,
    pred: torch.Tensor,
    timesteps: torch.Tensor,
    prediction_type: PredictionType | str = PredictionType.EPSILON,
) -> torch.Tensor:
    """The clean sample implied by a model output ``pred`` at ``(x_t, t)`` (float32)."""
    return _x0_and_eps(scheduler, x_t, pred, timesteps, prediction_type)[0]


def predict_eps(
    scheduler: Any,
    x_t: torch.Tensor,
    pred: torch.Tensor,
    timesteps: torch.Tensor,
    prediction_type: PredictionType | str = PredictionType.EPSILON,
) -> torch.Tensor:
    """The noise implied by a model output ``pred`` at ``(x_t, t)`` (float32)."""
    return _x0_and_eps(scheduler, x_t, pred, timesteps, prediction_type)[1]


def diffusion_target(
    scheduler: Any,
    x0: torch.Tensor,
    noise: torch.Tensor,
    timesteps: torch.Tensor,
    prediction_type: PredictionType | str = PredictionType.EPSILON,
) -> torch.Tensor:
    """The regression target for ``x_t = alpha_t x0 + sigma_t noise``: the noise, the DDPM velocity, ``x0`` or the
    flow velocity ``x0 - noise``."""
    ptype = PredictionType(prediction_type)
    if ptype == PredictionType.EPSILON:
        return noise
    if ptype == PredictionType.SAMPLE:
        return x0
    if ptype == PredictionType.FLOW:
        return x0 - noise
    a, s = alpha_sigma(scheduler, timesteps, x0)
    return (a * noise.float() - s * x0.float()).to(x0.dtype)


def snr(scheduler: Any, timesteps: torch.Tensor) -> torch.Tensor:
    """Signal-to-noise ratio ``alpha_t^2 / sigma_t^2`` per timestep (``(B,)``)."""
    t = torch.as_tensor(timesteps)
    a, s = alpha_sigma(scheduler, t, torch.empty(t.shape[0], device=t.device))
    return (a.pow(2) / s.pow(2).clamp_min(1e-12)).flatten()


def min_snr_weight(
    scheduler: Any,
    timesteps: torch.Tensor,
    gamma: float = 5.0,
    prediction_type: PredictionType | str = PredictionType.EPSILON,
) -> torch.Tensor:
    """Min-SNR-gamma loss weights per sample (Hang et al., Efficient Diffusion Training via Min-SNR Weighting
    Strategy, arXiv 2303.09556): the x0-space weight ``min(SNR, gamma)`` expressed for the network's target,
    i.e. ``min(SNR, gamma) / SNR`` for epsilon, ``min(SNR, gamma) / (SNR + 1)`` for v and ``min(SNR, gamma)`` for x0.
    Not defined for the flow target (returns ones)."""
    ptype = PredictionType(prediction_type)
    r = snr(scheduler, timesteps)
    clipped = r.clamp(max=gamma)
    if ptype == PredictionType.EPSILON:
        return clipped / r.clamp_min(1e-12)
    if ptype == PredictionType.V_PREDICTION:
        return clipped / (r + 1.0)
    if ptype == PredictionType.SAMPLE:
        return clipped
    return torch.ones_like(r)
