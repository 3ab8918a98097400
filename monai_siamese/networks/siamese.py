"""The Siamese-Diffusion training network: one UNet, one ControlNet shared by the Mask-Diffusion and the
Image-Diffusion branches, and the online-augmentation pass, in a single ``forward`` (so ``DistributedDataParallel``
sees one forward per step)."""

from __future__ import annotations

from enum import Enum

import torch
from monai.networks.nets import ControlNet, DiffusionModelUNet
from monai.networks.schedulers import DDPMScheduler, Scheduler
from torch import nn

from monai_siamese.diffusion import PredictionType, add_noise, diffusion_target, predict_x0
from monai_siamese.networks.controlnet import (
    UNET_ENCODER_PREFIXES,
    ControlNetConditionedUNet,
    UNetFeatures,
    controlnet_residuals,
    hint_channels,
    init_controlnet_from_unet,
    unet_decode,
    unet_encode,
)

__all__ = ["UNetMode", "SiameseDiffusionNetwork", "set_unet_mode"]


class UNetMode(str, Enum):
    """Which UNet parameters the mask and online-augmentation losses train (the image loss never trains the UNet)."""

    ALL = "all"  # the whole UNet
    DECODER = "decoder"  # up blocks and output only; encoder and time embedding frozen (the reference with SD)
    NONE = "none"  # UNet frozen, only the ControlNet trains


def set_unet_mode(
    unet: nn.Module, mode: UNetMode | str, encoder_prefixes: tuple[str, ...] = UNET_ENCODER_PREFIXES
) -> None:
    """Set ``requires_grad`` of the UNet's parameters for ``mode`` (``encoder_prefixes``: the encoder's parameter
    names, frozen by ``decoder``)."""
    mode = UNetMode(mode)
    for name, p in unet.named_parameters():
        if mode == UNetMode.ALL:
            p.requires_grad_(True)
        elif mode == UNetMode.NONE:
            p.requires_grad_(False)
        else:
            p.requires_grad_(not name.startswith(encoder_prefixes))


class _Decoder(nn.Module):
    """A view of the UNet whose forward is its decoder, so ``torch.func.functional_call`` can run the decoder with
    other (detached) parameters. It holds a reference, not a copy."""

    def __init__(self, unet: DiffusionModelUNet) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, features: UNetFeatures, down: list[torch.Tensor], mid: torch.Tensor) -> torch.Tensor:
        return unet_decode(self.unet, features, down, mid)


class SiameseDiffusionNetwork(nn.Module):
    """Siamese-Diffusion (Qiu et al., Noise-Consistent Siamese-Diffusion for Medical Image Synthesis and Segmentation,
    arXiv 2505.06068) on MONAI's ``DiffusionModelUNet`` and one ``ControlNet`` shared by both branches.

    ``forward`` returns, for one batch:

    - ``pred_mask`` = UNet(x_t, t, CN(x_t, t, hint=mask)) (Mask-Diffusion, trains the ControlNet and the UNet part
      chosen by ``unet_mode``);
    - ``pred_image`` = UNet_sg(x_t, t, sg(CN(x_t, t, hint=mask)) + w_i CN(x_t, t, hint=image)) (Image-Diffusion):
      the mask residuals are the Mask-Diffusion ones detached (same inputs, same weights: no second pass), and UNet_sg
      is the UNet's decoder run through ``torch.func.functional_call`` with detached parameters on the detached
      encoder features of the mask branch (the encoder output does not depend on the ControlNet), so the image loss
      reaches the ControlNet through its image-hint pass and never the UNet. The reference deep-copies both networks
      on every step for this; detaching gives the same gradients without the copies;
    - for the samples selected by ``oa_select`` (online augmentation): x0_hat from ``pred_image``,
      x'_t = q(x0_hat, t, same noise), ``pred_oa`` = UNet(sg(x'_t), t, CN(sg(x'_t), t, hint=mask)) and its target.

    At sampling only Mask-Diffusion runs: :meth:`denoiser` (a :class:`ControlNetConditionedUNet` sharing the weights;
    the state-dict keys ``unet.*``, ``controlnet.*`` are the same, so exported weights load into either).

    Args:
        unet: the denoising UNet (``in_channels`` = image channels).
        controlnet: the ControlNet (same architecture settings as the UNet; ``conditioning_embedding_in_channels`` =
            mask-hint channels).
        scheduler: the training noise scheduler (default: DDPM, 1000 linear-beta steps).
        prediction_type: ``epsilon``, ``v_prediction``, ``sample`` or ``flow`` (with a rectified-flow scheduler): the
            network's output and targets.
        unet_mode: :class:`UNetMode`, which UNet weights train.
        init_controlnet: copy the UNet encoder into the ControlNet at construction (do it after loading pretrained
            UNet weights: the bundle loads them before building this network).
        conditioning_scale: multiplier of the ControlNet residuals.
    """

    #: parameter prefixes of the UNet encoder (frozen by ``unet_mode=decoder``)
    encoder_prefixes: tuple[str, ...] = UNET_ENCODER_PREFIXES

    def __init__(
        self,
        unet: DiffusionModelUNet,
        controlnet: ControlNet,
        scheduler: Scheduler | None = None,
        prediction_type: PredictionType | str = PredictionType.EPSILON,
        unet_mode: UNetMode | str = UNetMode.ALL,
        init_controlnet: bool = True,
        conditioning_scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.unet = unet
        self.controlnet = controlnet
        # kept out of the module tree: the schedulers hold no parameters or buffers, and MONAI's RFlowScheduler never
        # runs nn.Module.__init__, so as a submodule it breaks .to(device), .train() and state_dict()
        scheduler = scheduler if scheduler is not None else DDPMScheduler(num_train_timesteps=1000)
        if isinstance(scheduler, nn.Module) and "_parameters" not in scheduler.__dict__:
            # torch.compile (dynamo) reads the module state of every nn.Module the forward touches: give it one
            nn.Module.__init__(scheduler)
        object.__setattr__(self, "scheduler", scheduler)
        self.prediction_type = PredictionType(prediction_type)
        self.unet_mode = UNetMode(unet_mode)
        self.conditioning_scale = conditioning_scale
        self.hint_channels = hint_channels(controlnet)
        if init_controlnet:
            self.copy_encoder_to_controlnet()
        set_unet_mode(unet, self.unet_mode, self.encoder_prefixes)

    def copy_encoder_to_controlnet(self) -> list[str]:
        """Copy the UNet encoder into the ControlNet; returns the copied keys."""
        return init_controlnet_from_unet(self.controlnet, self.unet)

    def encode(self, x_t: torch.Tensor, timesteps: torch.Tensor) -> UNetFeatures:
        """The UNet encoder half (what the mask and image branches share)."""
        return unet_encode(self.unet, x_t, timesteps)

    def decode(self, features: UNetFeatures, down: list[torch.Tensor], mid: torch.Tensor) -> torch.Tensor:
        """The UNet decoder half with ControlNet residuals."""
        return unet_decode(self.unet, features, down, mid)

    def decoder_view(self) -> nn.Module:
        """A module whose ``unet`` is this UNet and whose forward is :meth:`decode` (for ``functional_call``)."""
        return _Decoder(self.unet)

    def denoiser(self) -> ControlNetConditionedUNet:
        """The Mask-Diffusion denoiser ``eps = denoiser(x_t, t, mask_hint)`` on these weights (no copy)."""
        return ControlNetConditionedUNet(self.unet, self.controlnet, self.conditioning_scale)

    def _residuals(self, x: torch.Tensor, t: torch.Tensor, hint: torch.Tensor) -> tuple[list, torch.Tensor]:
        return controlnet_residuals(self.controlnet, x, t, hint, self.conditioning_scale)

    def frozen_decode(self, features: UNetFeatures, down: list[torch.Tensor], mid: torch.Tensor) -> torch.Tensor:
        """The UNet decoder with detached parameters: gradients reach ``down``/``mid`` but no UNet weight."""
        params = {f"unet.{k}": v.detach() for k, v in self.unet.named_parameters()}
        return torch.func.functional_call(self.decoder_view(), params, (features, down, mid))

    def mask_diffusion(self, x_t: torch.Tensor, timesteps: torch.Tensor, mask_hint: torch.Tensor) -> torch.Tensor:
        """UNet(x_t, t, CN(x_t, t, hint=mask)) with gradients to the trainable weights."""
        down, mid = self._residuals(x_t, timesteps, mask_hint)
        return self.unet(x_t, timesteps, down_block_additional_residuals=down, mid_block_additional_residual=mid)

    def forward(
        self,
        images: torch.Tensor,
        noise: torch.Tensor,
        timesteps: torch.Tensor,
        mask_hint: torch.Tensor,
        image_hint: torch.Tensor | None = None,
        image_weight: float = 1.0,
        oa_select: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Run the branches of one training step.

        Args:
            images: clean samples x0 ``(B, C, *spatial)``.
            noise: the noise eps of ``x_t = q(x0, t, eps)``.
            timesteps: ``(B,)``.
            mask_hint: encoded masks (ControlNet hint).
            image_hint: image hint (same channels as ``mask_hint``); None skips the image branch.
            image_weight: w_i, the weight of the image-hint residuals.
            oa_select: boolean ``(B,)``: samples that get the online-augmentation pass (needs ``image_hint``).

        Returns:
            ``x_t``, ``pred_mask``; with ``image_hint``: ``pred_image``; with selected samples: ``oa_index``,
            ``pred_oa``, ``target_oa``.
        """
        x_t = add_noise(self.scheduler, images, noise, timesteps)
        down_m, mid_m = self._residuals(x_t, timesteps, mask_hint)
        features = self.encode(x_t, timesteps)
        out = {"x_t": x_t, "pred_mask": self.decode(features, down_m, mid_m)}
        if image_hint is None:
            return out
        down_i, mid_i = self._residuals(x_t, timesteps, image_hint)
        down = [m.detach() + image_weight * i for m, i in zip(down_m, down_i)]
        mid = mid_m.detach() + image_weight * mid_i
        out["pred_image"] = self.frozen_decode(features.detach(), down, mid)
        if oa_select is None or not bool(oa_select.any()):
            return out
        idx = torch.nonzero(oa_select.to(x_t.device)).flatten()
        t_sel, eps_sel = timesteps[idx], noise[idx]
        with torch.no_grad():  # sg(x'_t): the augmentation input carries no gradient
            x0_hat = predict_x0(self.scheduler, x_t[idx], out["pred_image"][idx], t_sel, self.prediction_type)
            x_aug = add_noise(self.scheduler, x0_hat, eps_sel.float(), t_sel).to(x_t.dtype)
            target = diffusion_target(self.scheduler, x0_hat, eps_sel.float(), t_sel, self.prediction_type)
        out["oa_index"] = idx
        out["pred_oa"] = self.mask_diffusion(x_aug, t_sel, mask_hint[idx])
        out["target_oa"] = target
        return out
