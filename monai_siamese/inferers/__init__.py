"""Samplers (mask-only sampling, guidance, latent interpolation, blending hooks) and the pair generator."""

from __future__ import annotations

from monai_siamese.inferers.dpm_solver import DPMSolverMultistepScheduler, SamplerType, make_scheduler
from monai_siamese.inferers.generate import Job, PairGenerator, sample_seed
from monai_siamese.inferers.guiding import DynamicGuidingMask, InpaintJobs
from monai_siamese.inferers.latent import LatentSampler
from monai_siamese.inferers.sampler import ConditionalSampler, LatentInterpolation, seeded_noise

__all__ = [
    "DPMSolverMultistepScheduler",
    "DynamicGuidingMask",
    "InpaintJobs",
    "ConditionalSampler",
    "Job",
    "LatentInterpolation",
    "LatentSampler",
    "PairGenerator",
    "SamplerType",
    "make_scheduler",
    "sample_seed",
    "seeded_noise",
]
