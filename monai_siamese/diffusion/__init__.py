"""Diffusion math in one place: prediction types and their conversions, training and sampling schedulers (DDPM,
rectified flow, DDIM, DPM-Solver++, Euler), the scheduler step, min-SNR weighting and classifier-free guidance."""

from __future__ import annotations

from monai_siamese.diffusion.dpm_solver import DPMSolverMultistepScheduler
from monai_siamese.diffusion.guidance import guidance_combine, guided_prediction
from monai_siamese.diffusion.prediction import (
    PredictionType,
    add_noise,
    alpha_sigma,
    diffusion_target,
    is_flow,
    min_snr_weight,
    predict_eps,
    predict_x0,
    snr,
)
from monai_siamese.diffusion.schedulers import (
    ClippedDDIMScheduler,
    Objective,
    SamplerType,
    make_noise_scheduler,
    make_scheduler,
    prediction_for,
    scheduler_step,
    set_sampling_timesteps,
)

__all__ = [
    "ClippedDDIMScheduler",
    "DPMSolverMultistepScheduler",
    "Objective",
    "PredictionType",
    "SamplerType",
    "add_noise",
    "alpha_sigma",
    "diffusion_target",
    "guidance_combine",
    "guided_prediction",
    "is_flow",
    "make_noise_scheduler",
    "make_scheduler",
    "min_snr_weight",
    "predict_eps",
    "predict_x0",
    "prediction_for",
    "scheduler_step",
    "set_sampling_timesteps",
    "snr",
]
