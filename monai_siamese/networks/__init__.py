"""Conditioning wrappers around MONAI diffusion networks, and safe weight loading."""

from __future__ import annotations

from monai_siamese.networks.conditioning import ConcatConditionedUNet
from monai_siamese.networks.controlnet import (
    ControlNetConditionedUNet,
    UNetFeatures,
    controlnet_residuals,
    hint_channels,
    hint_downsample_factor,
    init_controlnet_from_unet,
    load_pretrained_unet,
    unet_decode,
    unet_encode,
)
from monai_siamese.networks.diffusers_backend import (
    DiffusersControlNet,
    DiffusersSiameseNetwork,
    DiffusersUNet,
    PretrainedModelError,
    StableDiffusionComponents,
    TextGuidedDenoiser,
    adapt_conv_in,
    check_pretrained_dir,
)
from monai_siamese.networks.latent import (
    ConditionMode,
    DiffusersVAECodec,
    LatentCodec,
    MonaiAutoencoderCodec,
    load_autoencoder_codec,
)
from monai_siamese.networks.siamese import SiameseDiffusionNetwork, UNetMode, set_unet_mode
from monai_siamese.networks.weights import (
    adapt_input_channels,
    check_settings,
    load_pretrained,
    load_state_dict_file,
    load_weights,
    read_settings,
    save_weights,
)

__all__ = [
    "ConcatConditionedUNet",
    "ConditionMode",
    "DiffusersControlNet",
    "DiffusersSiameseNetwork",
    "DiffusersUNet",
    "DiffusersVAECodec",
    "LatentCodec",
    "MonaiAutoencoderCodec",
    "PretrainedModelError",
    "StableDiffusionComponents",
    "TextGuidedDenoiser",
    "adapt_conv_in",
    "check_pretrained_dir",
    "load_autoencoder_codec",
    "ControlNetConditionedUNet",
    "SiameseDiffusionNetwork",
    "UNetFeatures",
    "UNetMode",
    "adapt_input_channels",
    "check_settings",
    "read_settings",
    "controlnet_residuals",
    "hint_channels",
    "hint_downsample_factor",
    "init_controlnet_from_unet",
    "load_pretrained",
    "load_pretrained_unet",
    "load_state_dict_file",
    "load_weights",
    "save_weights",
    "set_unet_mode",
    "unet_decode",
    "unet_encode",
]
