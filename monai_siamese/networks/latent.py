"""Latent space for the diffusion methods: a frozen autoencoder (the Stable Diffusion VAE from diffusers, or MONAI's
``AutoencoderKL``) that encodes images to scaled latents for training and decodes samples, and maps the pixel-space
conditions of the three methods to what the latent denoiser takes.

The denoisers and engines are unchanged: the latent prepare-batch
(:class:`~monai_siamese.engines.LatentDiffusionPrepareBatch`) hands them latents, and the latent sampler
(:class:`~monai_siamese.inferers.LatentSampler`) samples latents and decodes them, so datasets, writers and the
geometry of the written NIfTI stay in pixel space.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from enum import Enum

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ConditionMode", "LatentCodec", "DiffusersVAECodec", "MonaiAutoencoderCodec", "load_autoencoder_codec"]


class ConditionMode(str, Enum):
    """How a pixel-space condition reaches a latent denoiser.

    - ``pixel``: unchanged (a ControlNet hint: the hint encoder downsamples it to the latent size);
    - ``latent``: resized to the latent grid by area averaging (concatenated to the latent, segmentation-guided);
    - ``inpaint``: ``[encoded mask (C_m), known image (C_img), region (1)]`` becomes the Stable Diffusion inpainting
      layout ``[region (1), latent of the known image (C_lat), encoded mask (C_m)]`` on the latent grid, so an
      inpainting UNet's first ``latent + 1 + latent`` input channels keep their pretrained meaning and the mask
      channels are extra inputs (zero-initialised when the UNet is adapted).
    """

    PIXEL = "pixel"
    LATENT = "latent"
    INPAINT = "inpaint"


class LatentCodec(nn.Module):
    """A frozen image autoencoder seen as ``latents = encode(images)``, ``images = decode(latents)``, with the latents
    scaled to roughly unit variance, plus the condition mapping of :class:`ConditionMode`.

    Images are ``(B, image_channels, H, W)`` in [-1, 1]; a 1-channel image is repeated to the autoencoder's input
    channels and its output averaged back. Subclasses implement :meth:`_encode` and :meth:`_decode` on unscaled
    autoencoder latents.

    Args:
        image_channels: channels of the (pixel) images of the dataset.
        autoencoder_channels: input/output channels of the autoencoder.
        latent_channels: channels of the latents.
        factor: spatial downsampling factor of the encoder.
        scale: latent scaling factor (``z_scaled = (z - shift) * scale``).
        shift: latent shift factor.
        condition: :class:`ConditionMode` of the denoiser's condition.
        chunk_size: encode/decode at most this many images at once (VAE slicing, lower peak memory); None: all.
    """

    def __init__(
        self,
        image_channels: int,
        autoencoder_channels: int,
        latent_channels: int,
        factor: int,
        scale: float = 1.0,
        shift: float = 0.0,
        condition: ConditionMode | str = ConditionMode.PIXEL,
        chunk_size: int | None = None,
    ) -> None:
        super().__init__()
        self.image_channels = int(image_channels)
        self.autoencoder_channels = int(autoencoder_channels)
        self.latent_channels = int(latent_channels)
        self.factor = int(factor)
        self.register_buffer("scale", torch.tensor(float(scale)))
        self.register_buffer("shift", torch.tensor(float(shift)))
        self.condition = ConditionMode(condition)
        self.chunk_size = chunk_size

    # -- to implement ---------------------------------------------------------------------------------------------
    def _encode(self, x: torch.Tensor, sample: bool) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _decode(self, z: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def dtype(self) -> torch.dtype:
        for p in self.parameters():
            return p.dtype
        return torch.float32

    # -- shapes ---------------------------------------------------------------------------------------------------
    def latent_size(self, spatial: Sequence[int]) -> tuple[int, ...]:
        """The latent grid of an image of ``spatial`` size; an error when it does not divide by the factor."""
        if any(int(s) % self.factor for s in spatial):
            raise ValueError(
                f"image size {tuple(spatial)} is not a multiple of {self.factor}, the autoencoder's downsampling "
                "factor: set spatial_size to a multiple of it"
            )
        return tuple(int(s) // self.factor for s in spatial)

    def latent_noise(self, noise: torch.Tensor) -> torch.Tensor:
        """Latent-shaped Gaussian noise taken from pixel-shaped noise ``(B, C, H, W)``: the first elements of each
        sample's noise, so a sample's latent noise still depends only on its own seed (see
        :func:`~monai_siamese.inferers.seeded_noise`)."""
        shape = (self.latent_channels, *self.latent_size(noise.shape[2:]))
        n = 1
        for s in shape:
            n *= s
        flat = noise.flatten(1)
        if flat.shape[1] < n:
            raise ValueError(f"noise of {tuple(noise.shape[1:])} holds fewer values than the latent {shape}")
        return flat[:, :n].reshape(noise.shape[0], *shape).contiguous()

    # -- images ---------------------------------------------------------------------------------------------------
    def _chunks(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(x.split(self.chunk_size)) if self.chunk_size else [x]

    def _to_autoencoder(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        if c == self.autoencoder_channels:
            return x
        if c == 1:
            return x.repeat(1, self.autoencoder_channels, *([1] * (x.ndim - 2)))
        raise ValueError(f"{c}-channel images for an autoencoder with {self.autoencoder_channels} input channels")

    def _from_autoencoder(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == self.image_channels:
            return x
        if self.image_channels == 1:
            return x.mean(dim=1, keepdim=True)
        return x[:, : self.image_channels]

    @torch.no_grad()
    def encode(self, images: torch.Tensor, sample: bool = False) -> torch.Tensor:
        """Scaled latents (float32) of images in [-1, 1]; ``sample`` draws from the posterior instead of its mean."""
        self.latent_size(images.shape[2:])
        x = self._to_autoencoder(images.float()).to(self.dtype)
        z = torch.cat([self._encode(c, sample) for c in self._chunks(x)]).float()
        return (z - self.shift) * self.scale

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Images (float32, ``image_channels``) of scaled latents."""
        z = (latents.float() / self.scale + self.shift).to(self.dtype)
        return self._from_autoencoder(torch.cat([self._decode(c) for c in self._chunks(z)]).float())

    # -- conditions -----------------------------------------------------------------------------------------------
    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x.float(), size=self.latent_size(x.shape[2:]), mode="area")

    def encode_condition(self, cond: torch.Tensor) -> torch.Tensor:
        """The denoiser's condition for a pixel-space condition batch (see :class:`ConditionMode`)."""
        if self.condition == ConditionMode.PIXEL:
            return cond
        if self.condition == ConditionMode.LATENT:
            return self._resize(cond)
        n_img = self.image_channels
        if cond.shape[1] < n_img + 2:
            raise ValueError(
                f"an inpainting condition has [mask, known image ({n_img}), region (1)] channels, got {cond.shape[1]}"
                ": build it with InpaintConditiond(append_region=True)"
            )
        mask, known, region = cond[:, : -n_img - 1], cond[:, -n_img - 1 : -1], cond[:, -1:]
        return torch.cat([self._resize(region), self.encode(known), self._resize(mask)], dim=1)

    def condition_channels(self, cond_channels: int) -> int:
        """Channels of :meth:`encode_condition`'s output for a pixel condition of ``cond_channels``."""
        if self.condition == ConditionMode.INPAINT:
            return 1 + self.latent_channels + cond_channels - self.image_channels - 1
        return cond_channels

    def train(self, mode: bool = True) -> LatentCodec:
        return super().train(False)  # frozen: always eval (no dropout, fixed normalisation)


class DiffusersVAECodec(LatentCodec):
    """:class:`LatentCodec` on a diffusers ``AutoencoderKL`` (e.g. Stable Diffusion's VAE) with its
    ``scaling_factor`` and ``shift_factor``.

    Args:
        vae: the diffusers autoencoder (frozen here).
        image_channels: channels of the dataset's images.
        condition: :class:`ConditionMode`.
        chunk_size: VAE slicing.
    """

    def __init__(
        self,
        vae: nn.Module,
        image_channels: int = 1,
        condition: ConditionMode | str = ConditionMode.PIXEL,
        chunk_size: int | None = None,
    ) -> None:
        cfg = vae.config
        super().__init__(
            image_channels=image_channels,
            autoencoder_channels=cfg.in_channels,
            latent_channels=cfg.latent_channels,
            factor=2 ** (len(cfg.block_out_channels) - 1),
            scale=float(cfg.scaling_factor),
            shift=float(getattr(cfg, "shift_factor", None) or 0.0),
            condition=condition,
            chunk_size=chunk_size,
        )
        self.vae = vae.requires_grad_(False).eval()

    def _encode(self, x: torch.Tensor, sample: bool) -> torch.Tensor:
        dist = self.vae.encode(x).latent_dist
        return dist.sample() if sample else dist.mode()

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(z).sample


class MonaiAutoencoderCodec(LatentCodec):
    """:class:`LatentCodec` on MONAI's ``AutoencoderKL`` (``monai.networks.nets``, 2D), for users without Stable
    Diffusion weights: train it with :func:`~monai_siamese.engines.train_autoencoder` (or load one) and run any of
    the methods in its latent space (Rombach et al., latent diffusion, arXiv 2112.10752).

    ``scale`` is ``1 / std`` of the training latents (estimated by :func:`~monai_siamese.engines.train_autoencoder`
    and saved with the weights as ``scale``).

    Args:
        autoencoder: the MONAI ``AutoencoderKL`` (``in_channels`` = ``out_channels`` = image channels).
        condition: :class:`ConditionMode`.
        scale: latent scaling factor.
        chunk_size: encode/decode slicing.
    """

    def __init__(
        self,
        autoencoder: nn.Module,
        condition: ConditionMode | str = ConditionMode.LATENT,
        scale: float = 1.0,
        chunk_size: int | None = None,
    ) -> None:
        enc = autoencoder.encoder
        n_down = sum(1 for b in enc.blocks if type(b).__name__ == "AEKLDownsample")
        super().__init__(
            image_channels=enc.in_channels,
            autoencoder_channels=enc.in_channels,
            latent_channels=autoencoder.latent_channels,
            factor=2**n_down,
            scale=scale,
            condition=condition,
            chunk_size=chunk_size,
        )
        self.autoencoder = autoencoder.requires_grad_(False).eval()

    def _encode(self, x: torch.Tensor, sample: bool) -> torch.Tensor:
        mu, sigma = self.autoencoder.encode(x)
        return self.autoencoder.sampling(mu, sigma) if sample else mu

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.autoencoder.decode(z)


def load_autoencoder_codec(
    autoencoder: nn.Module,
    path: str | os.PathLike | None,
    condition: ConditionMode | str = ConditionMode.LATENT,
    chunk_size: int | None = None,
) -> MonaiAutoencoderCodec:
    """A :class:`MonaiAutoencoderCodec` with the weights (and the ``scale``) of ``path``, as written by
    :func:`~monai_siamese.engines.train_autoencoder`; a missing file is an error that says how to make one."""
    from pathlib import Path

    from monai_siamese.networks.weights import load_state_dict_file

    if path is None or not Path(path).is_file():
        raise FileNotFoundError(
            f"autoencoder weights {path} not found: train them first with "
            "python -m monai.bundle run train_autoencoder --config_file "
            "\"['bundles/seg_guided_diffusion/configs/train.json','bundles/seg_guided_diffusion/configs/latent.json']\""
            " (or set autoencoder_path)"
        )
    codec = MonaiAutoencoderCodec(autoencoder, condition=condition, chunk_size=chunk_size)
    state = load_state_dict_file(path)
    missing, unexpected = codec.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise RuntimeError(
            f"{path}: weights do not match the autoencoder: missing {missing[:3]}, unexpected {unexpected[:3]}; "
            "check the autoencoder settings of the config"
        )
    return codec.requires_grad_(False).eval()
