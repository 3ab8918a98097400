"""Sampling in the latent space of a frozen autoencoder: the pixel-space interface of
:class:`~monai_siamese.inferers.ConditionalSampler` (pixel conditions and pixel-shaped noise in, images in [-1, 1]
out), so :class:`~monai_siamese.inferers.PairGenerator` and the sample-grid handler run unchanged on a latent model."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.schedulers import Scheduler

from monai_siamese.inferers.sampler import ConditionalSampler, Denoiser, LatentInterpolation, StepHook
from monai_siamese.networks.latent import LatentCodec
from monai_siamese.transforms.mask import NULL_CONDITION

__all__ = ["LatentSampler"]


class LatentSampler(ConditionalSampler):
    """:class:`~monai_siamese.inferers.ConditionalSampler` whose reverse process runs on latents (latent diffusion,
    Rombach et al., arXiv 2112.10752; Stable Diffusion):

    - the condition is mapped by ``codec.encode_condition`` (resized mask, pixel hint, or inpainting layout);
    - the initial latent noise is taken from the given pixel-shaped noise (:meth:`LatentCodec.latent_noise`), so every
      sample still depends on its own seed only;
    - latent interpolation encodes its reference images; blending hooks that have ``to_latent`` (the
      :class:`~monai_siamese.inferers.DynamicGuidingMask`) act on the latent grid, and their ``finalize`` pastes the
      known image back at pixel resolution after decoding;
    - classifier-free guidance uses the latent map of the pixel null condition (what the model saw in training when
      the condition was dropped);
    - the final latents are decoded and clipped to [-1, 1].

    Args:
        codec: the frozen autoencoder (:class:`~monai_siamese.networks.LatentCodec`), on the sampling device.
        scheduler, num_inference_steps, guidance_scale, null_value, eta: as :class:`ConditionalSampler` (give a
            scheduler with ``clip_sample=False``).
    """

    def __init__(
        self,
        codec: LatentCodec,
        scheduler: Scheduler | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 1.0,
        null_value: float = NULL_CONDITION,
        eta: float = 0.0,
    ) -> None:
        super().__init__(scheduler, num_inference_steps, guidance_scale, null_value, eta)
        self.codec = codec
        self._null: torch.Tensor | None = None

    def null_condition(self, cond: torch.Tensor) -> torch.Tensor | None:
        # the latent map of the pixel null condition, set by __call__ for the current batch
        return self._null

    @torch.no_grad()
    def __call__(
        self,
        denoiser: Denoiser,
        cond: torch.Tensor,
        noise: torch.Tensor,
        interpolation: LatentInterpolation | None = None,
        hooks: Sequence[StepHook] = (),
        generator: torch.Generator | None = None,
        progress: bool = False,
    ) -> torch.Tensor:
        """Sample latents from pixel-space inputs and return decoded images in [-1, 1].

        Args:
            denoiser: latent denoiser ``eps = denoiser(z_t, t, latent_cond)``.
            cond: pixel-space condition ``(B, C, H, W)``.
            noise: pixel-shaped noise ``(B, C_img, H, W)`` (its first values become the latent noise).
            interpolation: latent interpolation with real images (pixel space, encoded here).
            hooks: step hooks; hooks with ``to_latent`` are converted, others must already act on latents.
            generator, progress: as :class:`ConditionalSampler`.
        """
        codec = self.codec
        lat_cond = codec.encode_condition(cond)
        self._null = None
        if self.guidance_scale != 1.0:
            self._null = codec.encode_condition(torch.full_like(cond, self.null_value))
        z = codec.latent_noise(noise)
        if interpolation is not None:
            interpolation = LatentInterpolation(
                codec.encode(interpolation.reference.to(z.device)),
                interpolation.lam,
                interpolation.t_tilde,
                interpolation.seeds,
            )
        latent_hooks = [h.to_latent(codec) if hasattr(h, "to_latent") else h for h in hooks]
        try:
            z = self.sample_loop(denoiser, lat_cond, z, interpolation, latent_hooks, generator, progress)
        finally:
            self._null = None
        images = codec.decode(z).clamp(-1.0, 1.0)
        for h in latent_hooks:
            if hasattr(h, "finalize"):
                images = h.finalize(images)
        return images
