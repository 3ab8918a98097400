"""Latent diffusion training: the prepare-batch that hands the engines latents instead of images, and a short
training entry for MONAI's ``AutoencoderKL`` (for users without Stable Diffusion weights)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from monai_siamese.engines.prepare_batch import ConditionalDiffusionPrepareBatch
from monai_siamese.networks.latent import LatentCodec, MonaiAutoencoderCodec

__all__ = ["LatentDiffusionPrepareBatch", "train_autoencoder"]

logger = logging.getLogger(__name__)


class LatentDiffusionPrepareBatch(ConditionalDiffusionPrepareBatch):
    """:class:`~monai_siamese.engines.ConditionalDiffusionPrepareBatch` in the latent space of a frozen autoencoder:
    the batch's images are encoded (``codec.encode``, posterior sample by default, as Stable Diffusion training does)
    and its condition mapped by ``codec.encode_condition``; the noise, timesteps and targets are drawn on the latents.
    The pixel images stay in the batch as ``pixel_image`` (``hint_image_key="pixel_image"`` hands them to the
    Siamese-Diffusion inferer, whose image hint is in pixel space).

    Args:
        codec: the frozen autoencoder, on the training device.
        num_train_timesteps, condition_name, mode, batch_transform, prediction_type, scheduler, min_snr_gamma,
            hint_image_key: as :class:`~monai_siamese.engines.ConditionalDiffusionPrepareBatch` (``batch_transform``
            acts on the pixel-space condition, before encoding).
        sample_posterior: encode with a posterior sample (True) or its mean.
        image_key: batch key of the images.
    """

    def __init__(
        self,
        codec: LatentCodec,
        num_train_timesteps: int,
        condition_name: str | None = "cond",
        mode: str = "concat",
        batch_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        prediction_type: str = "epsilon",
        scheduler: Any = None,
        min_snr_gamma: float | None = None,
        hint_image_key: str | None = None,
        sample_posterior: bool = True,
        image_key: str = "image",
    ) -> None:
        super().__init__(
            num_train_timesteps, condition_name, mode, None, prediction_type, scheduler, min_snr_gamma, hint_image_key
        )
        self.codec = codec
        self.pixel_transform = batch_transform
        self.sample_posterior = sample_posterior
        self.image_key = image_key

    def __call__(
        self,
        batchdata: Mapping[str, torch.Tensor],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor, tuple, dict]:
        batch = {k: (v.as_tensor() if hasattr(v, "as_tensor") else v) for k, v in batchdata.items()}
        images = batch[self.image_key].to(device, non_blocking=non_blocking)
        batch["pixel_image"] = images
        batch["image"] = self.codec.encode(images, sample=self.sample_posterior)
        if self.condition_name is not None and self.condition_name in batch:
            cond = batch[self.condition_name].to(device, non_blocking=non_blocking)
            if self.pixel_transform is not None:
                cond = self.pixel_transform(cond)
            batch[self.condition_name] = self.codec.encode_condition(cond)
        batch.pop("label", None)  # a pixel label is not the target of a latent model
        return super().__call__(batch, device, non_blocking, **kwargs)


def _kl(mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    var = sigma.pow(2)
    return 0.5 * (mu.pow(2) + var - torch.log(var.clamp_min(1e-12)) - 1).flatten(1).sum(1).mean()


def train_autoencoder(
    autoencoder: nn.Module,
    dataset: Any,
    output_path: str | os.PathLike,
    num_iterations: int = 2000,
    batch_size: int = 16,
    lr: float = 1e-4,
    kl_weight: float = 1e-6,
    device: str | torch.device | None = None,
    num_workers: int = 0,
    scale_batches: int = 8,
    seed: int = 0,
    log_interval: int = 100,
) -> dict[str, float]:
    """Train MONAI's ``AutoencoderKL`` on the images of ``dataset`` (L1 reconstruction + KL, as MONAI's latent
    diffusion tutorials without the perceptual and adversarial terms), estimate the latent scale ``1 / std`` on the
    training images (Rombach et al., arXiv 2112.10752) and save the weights with the scale atomically as safetensors
    (a :class:`~monai_siamese.networks.MonaiAutoencoderCodec` state dict: load it with
    :func:`~monai_siamese.networks.load_autoencoder_codec`).

    Args:
        autoencoder: ``monai.networks.nets.AutoencoderKL`` (2D, ``in_channels`` = image channels).
        dataset: items with ``image`` in [-1, 1] (e.g. the bundle's training ``SliceDataset``).
        output_path: the ``.safetensors`` file to write.
        num_iterations: optimizer steps.
        batch_size: images per step.
        lr: Adam learning rate.
        kl_weight: weight of the KL term.
        device: training device (default: cuda when available).
        num_workers: data-loader workers.
        scale_batches: batches used to estimate the latent scale.
        seed: seed of the data order and posterior samples.
        log_interval: steps between log lines.

    Returns:
        the final L1 loss and the latent scale.
    """
    from monai.data import DataLoader

    from monai_siamese.networks.weights import save_weights
    from monai_siamese.utils import default_device

    device = torch.device(device) if device is not None else default_device()
    torch.manual_seed(seed)
    ae = autoencoder.to(device).train()
    opt = torch.optim.Adam(ae.parameters(), lr=lr)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=num_workers, drop_last=False)
    step, l1 = 0, float("nan")
    while step < num_iterations:
        for batch in loader:
            x = torch.as_tensor(batch["image"]).float().to(device)
            recon, mu, sigma = ae(x)
            loss_l1 = (recon - x).abs().mean()
            loss = loss_l1 + kl_weight * _kl(mu, sigma)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step, l1 = step + 1, float(loss_l1.detach())
            if log_interval and step % log_interval == 0:
                logger.info(f"autoencoder step {step}/{num_iterations}: L1 {l1:.4f}")
            if step >= num_iterations:
                break
    ae.eval()
    codec = MonaiAutoencoderCodec(ae)
    zs = []
    with torch.no_grad():
        for i, batch in enumerate(DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)):
            if i >= scale_batches:
                break
            zs.append(codec.encode(torch.as_tensor(batch["image"]).float().to(device), sample=True).flatten())
    scale = 1.0 / float(torch.cat(zs).std().clamp_min(1e-6))
    codec.scale.fill_(scale)
    save_weights(codec, output_path)
    logger.info(f"autoencoder saved to {output_path} (L1 {l1:.4f}, latent scale {scale:.4f})")
    return {"l1": l1, "scale": scale}
