"""The Siamese-Diffusion training forward pass as a MONAI ``Inferer`` for the stock ``SupervisedTrainer`` (as MONAI's
``ControlNetDiffusionInferer`` is for ControlNet training): it makes the image hint, picks the samples that get the
online-augmentation pass and runs :class:`~monai_siamese.networks.SiameseDiffusionNetwork` in one forward (Qiu et al.,
Noise-Consistent Siamese-Diffusion for Medical Image Synthesis and Segmentation, arXiv 2505.06068)."""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum
from typing import Any

import torch
import torch.nn.functional as F
from monai.inferers import Inferer
from torch import nn

__all__ = ["ImageHint", "make_image_hint", "SiameseDiffusionInferer"]


class ImageHint(str, Enum):
    """How the image becomes a hint with the mask hint's channel count."""

    REPEAT = "repeat"  # the image channels tiled (a 1-channel image is repeated C times)
    PAD = "pad"  # the image channels, then zero channels


def make_image_hint(
    images: torch.Tensor, channels: int, mode: ImageHint | str = ImageHint.REPEAT, size: Sequence[int] | None = None
) -> torch.Tensor:
    """The image as a ControlNet hint: mapped from [-1, 1] to [0, 1] (the range of a one-hot mask hint, as the
    reference maps its images), matched to ``channels`` and resized to ``size`` (the mask hint's) if it differs.

    Args:
        images: ``(B, C_img, *spatial)`` in [-1, 1].
        channels: hint channels of the ControlNet.
        mode: :class:`ImageHint`.
        size: spatial size of the hint (default: the images').
    """
    hint = (images.float() + 1.0) / 2.0
    c = hint.shape[1]
    if ImageHint(mode) == ImageHint.REPEAT:
        hint = hint.repeat(1, -(-channels // c), *([1] * (hint.ndim - 2)))[:, :channels]
    elif c >= channels:
        hint = hint[:, :channels]
    else:
        hint = torch.cat([hint, hint.new_zeros((hint.shape[0], channels - c, *hint.shape[2:]))], dim=1)
    if size is not None and tuple(size) != tuple(hint.shape[2:]):
        hint = F.interpolate(hint, size=tuple(size), mode="bilinear" if hint.ndim == 4 else "trilinear")
    return hint


class SiameseDiffusionInferer(Inferer):
    """Training forward of Siamese-Diffusion: ``inferer(x0, network, noise=, timesteps=, condition=mask_hint)``
    returns the network's output dict (``pred_mask``, ``pred_image``, ``pred_oa``, ``target_oa``...) for
    :class:`~monai_siamese.engines.SiameseDiffusionLoss`.

    The image-hint weight ``w_i`` and whether online augmentation is on are set every iteration by
    :class:`~monai_siamese.engines.SiameseScheduleHandler` (``w_i = global_step / max_steps``; augmentation after
    ``oa_start`` of training), so this object holds the current values.

    Args:
        image_branch: run Image-Diffusion (False when the image, noise-consistency and augmentation losses are all
            off: Mask-Diffusion only, a plain ControlNet training).
        oa_max_t: online augmentation only for samples with ``t <= oa_max_t``.
        image_hint: :class:`ImageHint`, how the image is matched to the hint channels.
    """

    def __init__(
        self, image_branch: bool = True, oa_max_t: float = 200, image_hint: ImageHint | str = "repeat"
    ) -> None:
        super().__init__()
        self.image_branch = image_branch
        self.oa_max_t = oa_max_t
        self.image_hint = ImageHint(image_hint)
        self.image_weight = 0.0
        self.oa_active = False

    def __call__(  # type: ignore[override]
        self,
        inputs: torch.Tensor,
        network: nn.Module,
        noise: torch.Tensor,
        timesteps: torch.Tensor,
        condition: torch.Tensor,
        image_hint_source: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> dict[str, torch.Tensor]:
        """Args:
        inputs: clean samples x0 (images, or latents).
        network: the :class:`~monai_siamese.networks.SiameseDiffusionNetwork` (possibly in DDP).
        noise: the noise of ``x_t``.
        timesteps: ``(B,)``.
        condition: the mask hint.
        image_hint_source: the image the hint is made from (default ``inputs``; the pixel image of a latent model).
        kwargs: ignored (``mode`` of the shared prepare-batch).
        """
        image_hint = oa_select = None
        if self.image_branch:
            src = inputs if image_hint_source is None else image_hint_source.to(inputs.device)
            image_hint = make_image_hint(src, condition.shape[1], self.image_hint, condition.shape[2:])
            if self.oa_active:
                oa_select = timesteps <= self.oa_max_t
        out = network(inputs, noise, timesteps, condition, image_hint, self.image_weight, oa_select)
        out["image_weight"] = torch.tensor(self.image_weight)
        return out
