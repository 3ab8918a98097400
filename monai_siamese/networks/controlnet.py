"""ControlNet conditioning of MONAI's ``DiffusionModelUNet``: the mask-conditioned denoiser used at sampling, the
encoder/decoder split of the UNet forward, ControlNet initialisation from the UNet encoder and pretrained-UNet
loading."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import NamedTuple

import torch
from monai.networks.nets import ControlNet, DiffusionModelUNet
from monai.networks.nets.diffusion_model_unet import get_timestep_embedding
from monai.networks.utils import copy_model_state
from torch import nn

from monai_siamese.networks.weights import load_state_dict_file

__all__ = [
    "UNetFeatures",
    "unet_encode",
    "unet_decode",
    "hint_downsample_factor",
    "hint_channels",
    "ControlNetConditionedUNet",
    "controlnet_residuals",
    "init_controlnet_from_unet",
    "load_pretrained_unet",
    "UNET_ENCODER_PREFIXES",
]

logger = logging.getLogger(__name__)

#: parameter name prefixes of the ``DiffusionModelUNet`` encoder (what a ControlNet copies, and what ``decoder``
#: training freezes); the rest (``up_blocks``, ``out``) is the decoder
UNET_ENCODER_PREFIXES = ("conv_in.", "time_embed.", "class_embedding.", "down_blocks.", "middle_block.")


class UNetFeatures(NamedTuple):
    """What the UNet encoder hands to its decoder: the middle-block output, the time embedding and the skips."""

    h: torch.Tensor
    emb: torch.Tensor
    skips: list[torch.Tensor]

    def detach(self) -> UNetFeatures:
        return UNetFeatures(self.h.detach(), self.emb.detach(), [s.detach() for s in self.skips])

    def select(self, index: torch.Tensor) -> UNetFeatures:
        return UNetFeatures(self.h[index], self.emb[index], [s[index] for s in self.skips])


# MONAI's DiffusionModelUNet.forward runs encoder and decoder in one call. Siamese-Diffusion evaluates the decoder
# twice on the same encoder features (mask branch, and the image branch with extra ControlNet residuals), so the two
# halves are exposed here; ``unet_decode(unet, unet_encode(unet, x, t), r, m)`` equals ``unet(x, t, r, m)`` (tested).
def unet_encode(
    unet: DiffusionModelUNet,
    x: torch.Tensor,
    timesteps: torch.Tensor,
    context: torch.Tensor | None = None,
    class_labels: torch.Tensor | None = None,
) -> UNetFeatures:
    """The encoder half of ``DiffusionModelUNet.forward``: time (and class) embedding, input conv, down blocks and
    middle block.

    Args:
        unet: the network.
        x: input ``(B, C, *spatial)``.
        timesteps: ``(B,)``.
        context: cross-attention context, if the UNet has one.
        class_labels: class labels, if the UNet is class-conditional.
    """
    emb = unet.time_embed(get_timestep_embedding(timesteps, unet.block_out_channels[0]).to(dtype=x.dtype))
    if unet.num_class_embeds is not None:
        if class_labels is None:
            raise ValueError("class_labels should be provided when num_class_embeds > 0")
        emb = emb + unet.class_embedding(class_labels).to(dtype=x.dtype)
    if context is not None and unet.with_conditioning is False:
        raise ValueError("model should have with_conditioning = True if context is provided")
    h = unet.conv_in(x)
    skips = [h]
    for block in unet.down_blocks:
        h, res = block(hidden_states=h, temb=emb, context=context)
        skips.extend(res)
    h = unet.middle_block(hidden_states=h, temb=emb, context=context)
    return UNetFeatures(h, emb, skips)


def unet_decode(
    unet: DiffusionModelUNet,
    features: UNetFeatures,
    down_block_additional_residuals: Sequence[torch.Tensor] | None = None,
    mid_block_additional_residual: torch.Tensor | None = None,
    context: torch.Tensor | None = None,
) -> torch.Tensor:
    """The decoder half of ``DiffusionModelUNet.forward``, with ControlNet residuals added to the skips and to the
    middle-block output.

    Args:
        unet: the network.
        features: output of :func:`unet_encode`.
        down_block_additional_residuals: one residual per skip (ControlNet down outputs).
        mid_block_additional_residual: residual of the middle block (ControlNet mid output).
        context: cross-attention context, if the UNet has one.
    """
    skips = list(features.skips)
    if down_block_additional_residuals is not None:
        if len(down_block_additional_residuals) != len(skips):
            raise ValueError(f"{len(down_block_additional_residuals)} residuals for {len(skips)} UNet skips")
        skips = [s + r for s, r in zip(skips, down_block_additional_residuals)]
    h = features.h if mid_block_additional_residual is None else features.h + mid_block_additional_residual
    for block in unet.up_blocks:
        n = len(block.resnets)
        h = block(hidden_states=h, res_hidden_states_list=skips[-n:], temb=features.emb, context=context)
        skips = skips[:-n]
    return unet.out(h)


def hint_downsample_factor(controlnet: ControlNet) -> int:
    """Spatial factor between a ControlNet's hint and its input: 1 when ``conditioning_embedding_num_channels`` has
    one entry (hints at image resolution, pixel space), ``2 ** (n - 1)`` for ``n`` entries (hints at image
    resolution for a latent input)."""
    return 2 ** (len(controlnet.controlnet_cond_embedding.blocks) // 2)


def hint_channels(controlnet: ControlNet) -> int:
    """Input channels of a ControlNet's hint encoder (``conditioning_embedding_in_channels``)."""
    conv = controlnet.controlnet_cond_embedding.conv_in
    return int(getattr(conv, "conv", conv).in_channels)  # MONAI wraps the convolution, diffusers does not


def _check_hint(controlnet: ControlNet, x: torch.Tensor, hint: torch.Tensor) -> None:
    f = hint_downsample_factor(controlnet)
    expected = tuple(s * f for s in x.shape[2:])
    if tuple(hint.shape[2:]) != expected:
        raise ValueError(
            f"hint of spatial size {tuple(hint.shape[2:])} for an input of {tuple(x.shape[2:])}: the hint encoder "
            f"downsamples by {f} (conditioning_embedding_num_channels), so the hint must be {expected}"
        )


def controlnet_residuals(
    controlnet: ControlNet,
    x: torch.Tensor,
    timesteps: torch.Tensor,
    hint: torch.Tensor,
    conditioning_scale: float = 1.0,
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The ControlNet's residuals (down, mid) for ``hint``, after checking the hint's size."""
    _check_hint(controlnet, x, hint)
    down, mid = controlnet(x, timesteps, controlnet_cond=hint.to(x.dtype), conditioning_scale=conditioning_scale)
    return list(down), mid


class ControlNetConditionedUNet(nn.Module):
    """Mask-Diffusion denoiser: ``eps = unet(x_t, t, controlnet(x_t, t, hint=cond))``, the only branch of
    Siamese-Diffusion used at sampling (Qiu et al., Noise-Consistent Siamese-Diffusion for Medical Image Synthesis
    and Segmentation, arXiv 2505.06068), on MONAI's ``DiffusionModelUNet`` and ``ControlNet`` (2D or 3D).

    The condition is the hint (e.g. the one-hot mask); with a one-entry ``conditioning_embedding_num_channels`` it has
    the input's resolution, with ``n`` entries ``2 ** (n - 1)`` times the input's (latent inputs).

    Args:
        unet: the denoising network.
        controlnet: the ControlNet (same channels, blocks and attention levels as the UNet).
        conditioning_scale: multiplier of the ControlNet residuals.
    """

    def __init__(self, unet: DiffusionModelUNet, controlnet: ControlNet, conditioning_scale: float = 1.0) -> None:
        super().__init__()
        self.unet = unet
        self.controlnet = controlnet
        self.conditioning_scale = conditioning_scale

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        down, mid = controlnet_residuals(self.controlnet, x, timesteps, cond, self.conditioning_scale)
        return self.unet(x, timesteps, down_block_additional_residuals=down, mid_block_additional_residual=mid)


def init_controlnet_from_unet(controlnet: ControlNet, unet: DiffusionModelUNet) -> list[str]:
    """Copy the UNet encoder (input conv, time embedding, down blocks, middle block) into the ControlNet, as ControlNet
    is initialised from Stable Diffusion (``monai.networks.utils.copy_model_state``); the zero convolutions and the
    hint encoder keep their initialisation. Returns the copied keys.

    Raises:
        ValueError: when an encoder weight has no counterpart of the same shape in the ControlNet (the two networks
            were configured differently).
    """
    src = {k: v for k, v in unet.state_dict().items() if k.startswith(UNET_ENCODER_PREFIXES)}
    _, updated, _ = copy_model_state(controlnet, src, inplace=True)
    missing = sorted(set(src) - set(updated))
    if missing:
        raise ValueError(
            f"the ControlNet does not match the UNet encoder ({len(missing)} weights differ, e.g. {missing[:3]}): "
            "give both the same channels, num_res_blocks, attention_levels, norm_num_groups and num_head_channels"
        )
    return list(updated)


def load_pretrained_unet(
    unet: DiffusionModelUNet, path: str | os.PathLike | None, key: str | None = None
) -> DiffusionModelUNet:
    """Initialise ``unet`` from a checkpoint of an unconditional model or of a segmentation-guided model.

    Weights of the same name and shape are loaded. The segmentation-guided UNet's input convolution takes the image
    and the mask channels (``in_channels`` = image + mask channels); here the mask enters through the ControlNet, so
    only the image channels' slice of that convolution (``conv_in`` weight ``[:, :in_channels]``) is kept. Any other
    mismatch is an error. ``path`` None returns ``unet`` unchanged (training from scratch).

    Args:
        unet: the network to initialise.
        path: ``.safetensors`` or ``torch.save`` file (a ``CheckpointSaver`` checkpoint: its EMA weights first).
        key: entry of a multi-object checkpoint (default: ``ema``, then ``network``...).
    """
    if path is None or str(path) == "":
        return unet
    state = load_state_dict_file(path, key)
    if any(k.startswith("unet.") for k in state) and not any(k.startswith("conv_in.") for k in state):
        state = {k[5:]: v for k, v in state.items() if k.startswith("unet.")}  # a Siamese-Diffusion checkpoint
    own = unet.state_dict()
    adapted = []
    for k, v in list(state.items()):
        if k in own and v.shape != own[k].shape:
            target = own[k].shape
            if k.startswith("conv_in.") and v.ndim >= 2 and v.shape[0] == target[0] and v.shape[1] > target[1]:
                state[k] = v[:, : target[1]].clone()
                adapted.append(f"{k} {tuple(v.shape)} -> {tuple(target)}")
            else:
                raise RuntimeError(f"{path}: {k} has shape {tuple(v.shape)}, the network expects {tuple(target)}")
    missing, unexpected = unet.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise RuntimeError(
            f"{path}: weights do not match the UNet: {len(missing)} missing (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]}); check the network settings of the config"
        )
    msg = f"; kept the image channels of {', '.join(adapted)}" if adapted else ""
    logger.info(f"UNet initialised from {path}{msg}")
    return unet
