"""Samplers (mask-only sampling, guidance, latent interpolation, blending hooks) and the pair generator."""

from __future__ import annotations

from monai_siamese.inferers.generate import Job, PairGenerator, sample_seed, to_source_grid
from monai_siamese.inferers.guiding import DynamicGuidingMask, InpaintJobs
from monai_siamese.inferers.latent import LatentSampler
from monai_siamese.inferers.sampler import ConditionalSampler, LatentInterpolation, seeded_noise
from monai_siamese.inferers.siamese import ImageHint, SiameseDiffusionInferer, make_image_hint
from monai_siamese.inferers.volume import (
    EmptySlices,
    SliceNoise,
    VolumeGenerator,
    VolumeMode,
    condition_channels_of,
    slice_noise_seed,
)
from monai_siamese.inferers.volume_canvas import CanvasVolume, VolumeCanvas

__all__ = [
    "ImageHint",
    "SiameseDiffusionInferer",
    "make_image_hint",
    "EmptySlices",
    "SliceNoise",
    "VolumeGenerator",
    "VolumeMode",
    "VolumeCanvas",
    "CanvasVolume",
    "condition_channels_of",
    "slice_noise_seed",
    "DynamicGuidingMask",
    "InpaintJobs",
    "ConditionalSampler",
    "Job",
    "LatentInterpolation",
    "LatentSampler",
    "PairGenerator",
    "sample_seed",
    "to_source_grid",
    "seeded_noise",
]
