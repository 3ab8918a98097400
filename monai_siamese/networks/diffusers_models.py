"""Modules around diffusers networks, called like MONAI's: a UNet and a ControlNet with a fixed text context, text
classifier-free guidance, and the Siamese-Diffusion training network on diffusers weights. Built by
:class:`~monai_siamese.networks.StableDiffusionComponents` from a local Stable Diffusion folder."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import torch
from torch import nn

from monai_siamese.diffusion import PredictionType, guidance_combine
from monai_siamese.networks.siamese import SiameseDiffusionNetwork, UNetMode

__all__ = [
    "DIFFUSERS_ENCODER_PREFIXES",
    "DiffusersUNet",
    "DiffusersControlNet",
    "TextGuidedDenoiser",
    "DiffusersSiameseNetwork",
]

#: parameter prefixes of the diffusers UNet encoder inside :class:`DiffusersUNet` (frozen by ``unet_mode=decoder``)
DIFFUSERS_ENCODER_PREFIXES = (
    "unet.conv_in.",
    "unet.time_embedding.",
    "unet.class_embedding.",
    "unet.add_embedding.",
    "unet.down_blocks.",
    "unet.mid_block.",
)


def _register_prompts(module: nn.Module, prompt: torch.Tensor, negative: torch.Tensor | None) -> None:
    # the prompt is persistent (a checkpoint carries the prompt it was trained with); the empty prompt is not
    module.register_buffer("prompt_embeds", prompt.detach().float().clone())
    negative = torch.zeros_like(prompt) if negative is None else negative
    module.register_buffer("negative_embeds", negative.detach().float().clone(), persistent=False)
    module.use_negative_prompt = False


def _context(module: nn.Module, batch: int, dtype: torch.dtype) -> torch.Tensor:
    emb = module.negative_embeds if module.use_negative_prompt else module.prompt_embeds
    return emb.to(dtype).expand(batch, -1, -1)


class DiffusersUNet(nn.Module):
    """A diffusers ``UNet2DConditionModel`` with a fixed text context, called like MONAI's ``DiffusionModelUNet``:
    ``eps = net(x, timesteps, context=None, down_block_additional_residuals=None, mid_block_additional_residual=None)``.

    The prompt embedding is a (persistent) buffer, so an exported checkpoint carries the prompt it was trained with.

    Args:
        unet: the diffusers UNet.
        prompt_embeds: ``(1, L, D)`` text-encoder output of the fixed prompt.
    """

    def __init__(
        self, unet: nn.Module, prompt_embeds: torch.Tensor, negative_embeds: torch.Tensor | None = None
    ) -> None:
        super().__init__()
        self.unet = unet
        _register_prompts(self, prompt_embeds, negative_embeds)

    @property
    def in_channels(self) -> int:
        return int(self.unet.config.in_channels)

    def context(self, batch: int, dtype: torch.dtype) -> torch.Tensor:
        return _context(self, batch, dtype)

    def forward(
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor,
        context: torch.Tensor | None = None,
        down_block_additional_residuals: Sequence[torch.Tensor] | None = None,
        mid_block_additional_residual: torch.Tensor | None = None,
    ) -> torch.Tensor:
        ctx = context if context is not None else self.context(x.shape[0], x.dtype)
        return self.unet(
            x,
            timesteps,
            encoder_hidden_states=ctx,
            down_block_additional_residuals=down_block_additional_residuals,
            mid_block_additional_residual=mid_block_additional_residual,
            return_dict=False,
        )[0]


class DiffusersControlNet(nn.Module):
    """A diffusers ``ControlNetModel`` with a fixed text context, called like MONAI's ``ControlNet``:
    ``down, mid = net(x, timesteps, controlnet_cond=hint, conditioning_scale=1.0)``.

    Args:
        controlnet: the diffusers ControlNet.
        prompt_embeds: ``(1, L, D)`` text-encoder output of the fixed prompt.
    """

    def __init__(
        self, controlnet: nn.Module, prompt_embeds: torch.Tensor, negative_embeds: torch.Tensor | None = None
    ) -> None:
        super().__init__()
        self.controlnet = controlnet
        _register_prompts(self, prompt_embeds, negative_embeds)

    @property
    def controlnet_cond_embedding(self) -> nn.Module:
        """The hint encoder (what :func:`~monai_siamese.networks.hint_downsample_factor` reads)."""
        return self.controlnet.controlnet_cond_embedding

    def forward(
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor,
        controlnet_cond: torch.Tensor,
        conditioning_scale: float = 1.0,
        context: torch.Tensor | None = None,
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        ctx = context if context is not None else _context(self, x.shape[0], x.dtype)
        down, mid = self.controlnet(
            x,
            timesteps,
            encoder_hidden_states=ctx,
            controlnet_cond=controlnet_cond.to(x.dtype),
            conditioning_scale=conditioning_scale,
            return_dict=False,
        )
        return list(down), mid


class TextGuidedDenoiser(nn.Module):
    """Classifier-free guidance on the text prompt: ``eps = eps(empty prompt) + s * (eps(prompt) - eps(empty prompt))``
    with the mask condition kept in both passes, as the ControlNet sampler of the Siamese-Diffusion reference does
    (its text guidance scale is 9.0). Every :class:`DiffusersUNet` / :class:`DiffusersControlNet` inside ``denoiser``
    switches to the empty prompt for the second pass. With ``scale`` 1, or a prompt equal to the empty prompt, it is
    one plain pass.

    Args:
        denoiser: ``eps = denoiser(x_t, t, cond)`` on diffusers networks.
        scale: text guidance scale.
    """

    def __init__(self, denoiser: nn.Module, scale: float = 1.0) -> None:
        super().__init__()
        self.denoiser = denoiser
        self.scale = float(scale)

    def _prompted(self) -> list[nn.Module]:
        return [m for m in self.denoiser.modules() if isinstance(m, (DiffusersUNet, DiffusersControlNet))]

    @contextlib.contextmanager
    def empty_prompt(self) -> Iterator[None]:
        """Within the block, every prompted network of the denoiser sees the empty prompt (the unconditional
        pass of text guidance)."""
        mods = self._prompted()
        for m in mods:
            m.use_negative_prompt = True
        try:
            yield
        finally:
            for m in mods:
                m.use_negative_prompt = False

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        mods = self._prompted()
        if self.scale == 1.0 or not mods or all(torch.equal(m.prompt_embeds, m.negative_embeds) for m in mods):
            return self.denoiser(x, timesteps, cond)
        conditional = self.denoiser(x, timesteps, cond)
        with self.empty_prompt():
            unconditional = self.denoiser(x, timesteps, cond)
        return guidance_combine(conditional, unconditional, self.scale)


class _InputFeatures(NamedTuple):
    """The diffusers UNet's forward is not split into encoder and decoder here: its "features" are its inputs."""

    x: torch.Tensor
    timesteps: torch.Tensor

    def detach(self) -> _InputFeatures:
        return _InputFeatures(self.x.detach(), self.timesteps)

    def select(self, index: torch.Tensor) -> _InputFeatures:
        return _InputFeatures(self.x[index], self.timesteps[index])


class _FullPass(nn.Module):
    """A view of the :class:`DiffusersUNet` for ``torch.func.functional_call`` with detached parameters."""

    def __init__(self, unet: DiffusersUNet) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, features: _InputFeatures, down: list[torch.Tensor], mid: torch.Tensor) -> torch.Tensor:
        return self.unet(features.x, features.timesteps, None, down, mid)


class DiffusersSiameseNetwork(SiameseDiffusionNetwork):
    """Siamese-Diffusion (Qiu et al., Noise-Consistent Siamese-Diffusion for Medical Image Synthesis and Segmentation,
    arXiv 2505.06068) on a pretrained diffusers UNet and a ControlNet initialised from it, as the reference trains it
    on Stable Diffusion 1.5: same branches and losses as :class:`~monai_siamese.networks.SiameseDiffusionNetwork`.

    Image-Diffusion runs the whole UNet through ``torch.func.functional_call`` with detached parameters (diffusers'
    forward is not split into encoder and decoder, so the encoder runs a second time; gradients are the same, no copy
    of the networks is made).

    Args:
        unet: a :class:`DiffusersUNet` (``StableDiffusionComponents.unet()``).
        controlnet: a :class:`DiffusersControlNet` (``StableDiffusionComponents.controlnet(unet, hint_channels)``).
        scheduler: the training scheduler (``StableDiffusionComponents.scheduler()``).
        prediction_type: the network's output and targets.
        unet_mode: which UNet weights train (``decoder``: up blocks and output, as the reference on SD).
        init_controlnet: copy the UNet encoder into the ControlNet again (``from_unet`` already did).
        conditioning_scale: multiplier of the ControlNet residuals.
    """

    encoder_prefixes = DIFFUSERS_ENCODER_PREFIXES

    def __init__(
        self,
        unet: DiffusersUNet,
        controlnet: DiffusersControlNet,
        scheduler: Any = None,
        prediction_type: PredictionType | str = PredictionType.EPSILON,
        unet_mode: UNetMode | str = UNetMode.DECODER,
        init_controlnet: bool = False,
        conditioning_scale: float = 1.0,
    ) -> None:
        if not isinstance(unet, DiffusersUNet) or not isinstance(controlnet, DiffusersControlNet):
            raise TypeError("DiffusersSiameseNetwork takes a DiffusersUNet and a DiffusersControlNet")
        super().__init__(unet, controlnet, scheduler, prediction_type, unet_mode, init_controlnet, conditioning_scale)

    def copy_encoder_to_controlnet(self) -> list[str]:
        src = self.unet.unet.state_dict()
        dst = self.controlnet.controlnet
        own = dst.state_dict()
        copied = {k: v for k, v in src.items() if k in own and own[k].shape == v.shape}
        copied = {k: v for k, v in copied.items() if k.startswith(tuple(p[5:] for p in DIFFUSERS_ENCODER_PREFIXES))}
        dst.load_state_dict(copied, strict=False)
        return list(copied)

    def encode(self, x_t: torch.Tensor, timesteps: torch.Tensor) -> _InputFeatures:
        return _InputFeatures(x_t, timesteps)

    def decode(self, features: _InputFeatures, down: list[torch.Tensor], mid: torch.Tensor) -> torch.Tensor:
        return self.unet(features.x, features.timesteps, None, down, mid)

    def decoder_view(self) -> nn.Module:
        return _FullPass(self.unet)

    def frozen_decode(self, features: _InputFeatures, down: list[torch.Tensor], mid: torch.Tensor) -> torch.Tensor:
        # activation checkpointing recomputes with the module's own parameters, not the detached ones that
        # functional_call swapped in (so the recomputed graph differs): this pass keeps its activations instead
        flagged = [m for m in self.unet.modules() if getattr(m, "gradient_checkpointing", False) is True]
        for m in flagged:
            m.gradient_checkpointing = False
        try:
            return super().frozen_decode(features, down, mid)
        finally:
            for m in flagged:
                m.gradient_checkpointing = True
