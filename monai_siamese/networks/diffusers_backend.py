"""Pretrained foundation models from a local diffusers folder (Stable Diffusion 1.5, its inpainting variant, or any
folder with the same layout) behind the denoiser interface of the methods.

- :class:`StableDiffusionComponents` checks and loads the folder (``unet/``, ``vae/``, ``text_encoder/``,
  ``tokenizer/``, ``scheduler/``, ``model_index.json``), computes the fixed prompt embedding once and frees the text
  encoder, and builds the pieces a bundle needs: the UNet (input channels adapted for concatenated or inpainting
  conditions), a ControlNet initialised from it (``ControlNetModel.from_unet``), the VAE codec and MONAI schedulers
  with the folder's noise schedule.
- :class:`DiffusersUNet` and :class:`DiffusersControlNet` are called like MONAI's ``DiffusionModelUNet`` and
  ``ControlNet`` (``unet(x, timesteps, down_block_additional_residuals=..., mid_block_additional_residual=...)``,
  ``controlnet(x, timesteps, controlnet_cond=..., conditioning_scale=...)``), so
  :class:`~monai_siamese.networks.ConcatConditionedUNet`, :class:`~monai_siamese.networks.ControlNetConditionedUNet`,
  MONAI's ``DiffusionInferer`` and the engines run on them unchanged.
- :class:`DiffusersSiameseNetwork` is :class:`~monai_siamese.networks.SiameseDiffusionNetwork` on them (Qiu et al.,
  arXiv 2505.06068, whose reference trains a ControlNet on Stable Diffusion 1.5).

Nothing is downloaded: every path is local. ``diffusers`` and ``transformers`` are the optional extra ``sd``.
"""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from monai_siamese.errors import InputError
from monai_siamese.networks.diffusers_models import (
    DIFFUSERS_ENCODER_PREFIXES,
    DiffusersControlNet,
    DiffusersSiameseNetwork,
    DiffusersUNet,
    TextGuidedDenoiser,
)
from monai_siamese.networks.latent import ConditionMode, DiffusersVAECodec

__all__ = [
    "PretrainedModelError",
    "check_pretrained_dir",
    "StableDiffusionComponents",
    "DiffusersUNet",
    "DiffusersControlNet",
    "DiffusersSiameseNetwork",
    "TextGuidedDenoiser",
    "adapt_conv_in",
    "DIFFUSERS_ENCODER_PREFIXES",
]

logger = logging.getLogger(__name__)


_MODEL_WEIGHTS = ("diffusion_pytorch_model", "model", "pytorch_model")
_WEIGHT_EXTS = (".safetensors", ".bin", ".safetensors.index.json", ".bin.index.json")
_DTYPES = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16}
_DTYPES.update({"bf16": torch.bfloat16, "bfloat16": torch.bfloat16})


class PretrainedModelError(InputError, FileNotFoundError):
    """The pretrained folder is not set, missing or incomplete."""


def _dtype(name: str | torch.dtype | None) -> torch.dtype:
    if name is None:
        return torch.float32
    if isinstance(name, torch.dtype):
        return name
    if str(name).lower() not in _DTYPES:
        raise ValueError(f"weight_dtype must be one of fp32, fp16, bf16, got {name!r}")
    return _DTYPES[str(name).lower()]


def _weights_variant(folder: Path) -> tuple[bool, str | None]:
    """Whether ``folder`` holds model weights, and the diffusers ``variant`` (``fp16``...) when only a variant does."""
    for stem in _MODEL_WEIGHTS:
        if any((folder / f"{stem}{ext}").is_file() for ext in _WEIGHT_EXTS):
            return True, None
    for p in sorted(folder.glob("*")):
        for stem in _MODEL_WEIGHTS:
            for ext in _WEIGHT_EXTS:
                if p.name.startswith(stem + ".") and p.name.endswith(ext):
                    variant = p.name[len(stem) + 1 : -len(ext)]
                    if variant and "." not in variant and "-of-" not in variant:
                        return True, variant
    return False, None


#: what each part of the folder must hold: (files that must all exist, alternative weight check)
_LAYOUT = {
    "unet": "unet/ (config.json and diffusion_pytorch_model.safetensors)",
    "vae": "vae/ (config.json and diffusion_pytorch_model.safetensors)",
    "text_encoder": "text_encoder/ (config.json and model.safetensors)",
    "tokenizer": "tokenizer/ (vocab.json + merges.txt, or tokenizer.json)",
    "scheduler": "scheduler/ (scheduler_config.json)",
    "model_index.json": "model_index.json",
}
DEFAULT_PARTS = ("model_index.json", "unet", "vae", "text_encoder", "tokenizer", "scheduler")


def check_pretrained_dir(path: str | os.PathLike | None, parts: Sequence[str] = DEFAULT_PARTS) -> Path:
    """Check a local diffusers folder before anything is loaded; return it as a ``Path``.

    Raises:
        PretrainedModelError: naming the folder and every missing or incomplete sub-folder or file.
    """
    if path is None or str(path).strip().lower() in ("", "none", "null"):
        raise PretrainedModelError(
            "pretrained_path is not set: give the local diffusers folder of the pretrained model, e.g. "
            "--pretrained_path /models/stable-diffusion-v1-5 (a folder with "
            + ", ".join(_LAYOUT[p] for p in parts)
            + "); nothing is downloaded"
        )
    root = Path(path).expanduser()
    if not root.is_dir():
        raise PretrainedModelError(f"pretrained_path {root}: folder not found (expected a local diffusers folder)")
    problems = []
    for part in parts:
        if part == "model_index.json":
            if not (root / part).is_file():
                problems.append("model_index.json (file missing)")
            continue
        sub = root / part
        if not sub.is_dir():
            problems.append(f"{part}/ (folder missing)")
            continue
        if part in ("unet", "vae", "text_encoder"):
            if not (sub / "config.json").is_file():
                problems.append(f"{part}/config.json (missing)")
            if not _weights_variant(sub)[0]:
                problems.append(f"{part}/ has no weights file ({'|'.join(_MODEL_WEIGHTS)}.safetensors or .bin)")
        elif part == "tokenizer":
            if not (
                (sub / "tokenizer.json").is_file() or all((sub / f).is_file() for f in ("vocab.json", "merges.txt"))
            ):
                problems.append("tokenizer/ (vocab.json + merges.txt or tokenizer.json missing)")
        elif part == "scheduler" and not (sub / "scheduler_config.json").is_file():
            problems.append("scheduler/scheduler_config.json (missing)")
    if problems:
        raise PretrainedModelError(
            f"pretrained_path {root} is not a complete diffusers folder: missing {'; '.join(problems)}. "
            f"Expected {', '.join(_LAYOUT[p] for p in parts)} (e.g. a local copy of stable-diffusion-v1-5 saved with "
            "save_pretrained)"
        )
    return root


def adapt_conv_in(unet: nn.Module, in_channels: int) -> nn.Module:
    """Give a diffusers UNet (or ControlNet) ``in_channels`` inputs: the pretrained input convolution's channels are
    kept, extra channels get zero weights (the adapted network initially behaves as the pretrained one), fewer
    channels keep the leading ones. ``config.in_channels`` is updated, so ``save_pretrained`` round-trips."""
    old = unet.conv_in
    if old.in_channels == in_channels:
        return unet
    new = nn.Conv2d(
        in_channels, old.out_channels, old.kernel_size, old.stride, old.padding, bias=old.bias is not None
    ).to(device=old.weight.device, dtype=old.weight.dtype)
    with torch.no_grad():
        new.weight.zero_()
        n = min(in_channels, old.in_channels)
        new.weight[:, :n] = old.weight[:, :n]
        if old.bias is not None:
            new.bias.copy_(old.bias)
    unet.conv_in = new
    unet.register_to_config(in_channels=in_channels)
    logger.info(f"UNet input convolution adapted from {old.in_channels} to {in_channels} channels")
    return unet


def _memory_options(model: nn.Module, gradient_checkpointing: bool, attention_slice: Any) -> nn.Module:
    if gradient_checkpointing:
        model.enable_gradient_checkpointing()
    if attention_slice not in (None, False, "none", "None", ""):
        model.set_attention_slice(attention_slice)  # "auto", "max" or an int: attention in slices, lower peak memory
    return model


class StableDiffusionComponents:
    """Loads a local diffusers folder (Stable Diffusion 1.5, its inpainting variant, or the same layout) once and
    builds the pieces a bundle config needs.

    The folder is checked at construction (:func:`check_pretrained_dir`). The text encoder and tokenizer are loaded
    only to embed ``prompt`` (and the empty prompt) once, then freed. Trainable networks (UNet, ControlNet) are kept in
    float32 (mixed precision comes from the trainer's AMP); frozen ones (VAE) in ``weight_dtype``.

    Args:
        path: the local diffusers folder.
        prompt: the fixed text prompt of every sample (the reference uses per-dataset prompts; "" = unconditional).
        weight_dtype: ``fp32``, ``fp16`` or ``bf16`` for the frozen weights (VAE, text encoder).
        gradient_checkpointing: recompute activations in the backward pass (UNet and ControlNet).
        attention_slice: diffusers attention slicing (``"auto"``, ``"max"``, an int); None: off. SDPA attention (the
            diffusers default) is used either way.
        vae_chunk_size: VAE slicing: encode/decode at most this many images at once.
        device: where the text encoder runs for the prompt embedding.
    """

    def __init__(
        self,
        path: str | os.PathLike | None,
        prompt: str = "",
        weight_dtype: str | torch.dtype = "fp32",
        gradient_checkpointing: bool = False,
        attention_slice: int | str | None = None,
        vae_chunk_size: int | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        self.path = check_pretrained_dir(path)
        self.prompt = prompt
        self.weight_dtype = _dtype(weight_dtype)
        self.gradient_checkpointing = gradient_checkpointing
        self.attention_slice = attention_slice
        self.vae_chunk_size = vae_chunk_size
        self.device = torch.device(device)
        self._prompt_embeds: torch.Tensor | None = None
        self._negative_embeds: torch.Tensor | None = None
        self._scheduler_config: dict | None = None

    # -- text -----------------------------------------------------------------------------------------------------
    def _embed_prompts(self) -> None:
        from transformers import AutoTokenizer, CLIPTextModel

        tokenizer = AutoTokenizer.from_pretrained(str(self.path / "tokenizer"), local_files_only=True)
        variant = _weights_variant(self.path / "text_encoder")[1]
        kw = {"variant": variant} if variant else {}
        encoder = CLIPTextModel.from_pretrained(
            str(self.path / "text_encoder"), torch_dtype=self.weight_dtype, local_files_only=True, **kw
        ).to(self.device)
        encoder.eval()
        out = []
        with torch.no_grad():
            for text in (self.prompt, ""):
                ids = tokenizer(
                    [text],
                    padding="max_length",
                    max_length=tokenizer.model_max_length,
                    truncation=True,
                    return_tensors="pt",
                ).input_ids.to(self.device)
                out.append(encoder(ids)[0].float().cpu())
        self._prompt_embeds, self._negative_embeds = out
        del encoder, tokenizer  # the text encoder is not needed any more: free it
        gc.collect()
        logger.info(f"prompt {self.prompt!r} embedded {tuple(self._prompt_embeds.shape)}; text encoder freed")

    @property
    def prompt_embeds(self) -> torch.Tensor:
        """``(1, L, D)`` embedding of the fixed prompt (computed once)."""
        if self._prompt_embeds is None:
            self._embed_prompts()
        return self._prompt_embeds

    @property
    def negative_embeds(self) -> torch.Tensor:
        """``(1, L, D)`` embedding of the empty prompt."""
        if self._negative_embeds is None:
            self._embed_prompts()
        return self._negative_embeds

    # -- networks -------------------------------------------------------------------------------------------------
    def _load(self, cls: Any, sub: str, dtype: torch.dtype) -> nn.Module:
        variant = _weights_variant(self.path / sub)[1]
        kw = {"variant": variant} if variant else {}
        model = cls.from_pretrained(str(self.path), subfolder=sub, torch_dtype=dtype, local_files_only=True, **kw)
        return model

    def load_unet(self, in_channels: int | None = None) -> nn.Module:
        """A fresh diffusers ``UNet2DConditionModel`` from ``unet/`` (float32), input channels adapted."""
        from diffusers import UNet2DConditionModel

        unet = self._load(UNet2DConditionModel, "unet", torch.float32)
        if in_channels is not None:
            adapt_conv_in(unet, int(in_channels))
        return _memory_options(unet, self.gradient_checkpointing, self.attention_slice)

    def unet(self, in_channels: int | None = None) -> DiffusersUNet:
        """The pretrained UNet as a :class:`DiffusersUNet` with the fixed prompt.

        Args:
            in_channels: input channels (latent + concatenated condition): the pretrained input convolution is kept
                and extra channels are zero-initialised (:func:`adapt_conv_in`). None: as pretrained.
        """
        return DiffusersUNet(self.load_unet(in_channels), self.prompt_embeds, self.negative_embeds)

    def controlnet(
        self,
        unet: DiffusersUNet | nn.Module,
        conditioning_channels: int,
        conditioning_embedding_out_channels: Sequence[int] | None = None,
    ) -> DiffusersControlNet:
        """A diffusers ``ControlNetModel`` initialised from ``unet`` (``ControlNetModel.from_unet``: the encoder is
        copied, the zero convolutions start at zero).

        Args:
            unet: the UNet (a :class:`DiffusersUNet` or a diffusers UNet).
            conditioning_channels: channels of the hint (e.g. the one-hot mask).
            conditioning_embedding_out_channels: channels of the hint encoder; its length sets the hint's
                downsampling (``2 ** (n - 1)``). Default: ``(16, 32, 96, 256)`` cut to the VAE's factor, so the hint is
                given at image resolution.
        """
        from diffusers import ControlNetModel

        base = unet.unet if isinstance(unet, DiffusersUNet) else unet
        if conditioning_embedding_out_channels is None:
            n = len(self._vae_config()["block_out_channels"])  # factor 2 ** (n - 1)
            conditioning_embedding_out_channels = (16, 32, 96, 256, 256, 256)[:n]
        cn = ControlNetModel.from_unet(
            base,
            conditioning_embedding_out_channels=tuple(conditioning_embedding_out_channels),
            conditioning_channels=int(conditioning_channels),
        )
        cn = _memory_options(cn, self.gradient_checkpointing, self.attention_slice)
        return DiffusersControlNet(cn, self.prompt_embeds, self.negative_embeds)

    def _vae_config(self) -> dict:
        import json

        return json.loads((self.path / "vae" / "config.json").read_text())

    def codec(self, image_channels: int = 1, condition: ConditionMode | str = ConditionMode.PIXEL) -> DiffusersVAECodec:
        """The frozen VAE as a :class:`~monai_siamese.networks.DiffusersVAECodec` in ``weight_dtype``."""
        from diffusers import AutoencoderKL

        vae = self._load(AutoencoderKL, "vae", self.weight_dtype)
        return DiffusersVAECodec(vae, image_channels, condition, self.vae_chunk_size)

    # -- schedules ------------------------------------------------------------------------------------------------
    @property
    def scheduler_config(self) -> dict:
        if self._scheduler_config is None:
            import json

            self._scheduler_config = json.loads((self.path / "scheduler" / "scheduler_config.json").read_text())
        return self._scheduler_config

    @property
    def prediction_type(self) -> str:
        """The pretrained model's prediction type (``epsilon`` for SD 1.5, ``v_prediction`` for SD 2.x 768)."""
        return str(self.scheduler_config.get("prediction_type", "epsilon"))

    @property
    def num_train_timesteps(self) -> int:
        return int(self.scheduler_config.get("num_train_timesteps", 1000))

    def scheduler(self, kind: str = "DDPMScheduler", **kwargs: Any) -> Any:
        """A MONAI scheduler (``DDPMScheduler``, ``DDIMScheduler``) with the folder's noise schedule (SD 1.5:
        ``scaled_linear`` betas 0.00085-0.012 over 1000 steps) and ``clip_sample=False`` (latents are not in
        [-1, 1])."""
        from monai.networks import schedulers

        cfg = self.scheduler_config
        names = {"scaled_linear": "scaled_linear_beta", "linear": "linear_beta", "squaredcos_cap_v2": "cosine"}
        schedule = names.get(cfg.get("beta_schedule", "scaled_linear"))
        if schedule is None:
            raise ValueError(f"{self.path}/scheduler: beta_schedule {cfg.get('beta_schedule')!r} is not supported")
        args: dict[str, Any] = {
            "num_train_timesteps": self.num_train_timesteps,
            "schedule": schedule,
            "prediction_type": self.prediction_type,
            "clip_sample": False,
        }
        if schedule != "cosine":
            args.update(beta_start=float(cfg.get("beta_start", 0.00085)), beta_end=float(cfg.get("beta_end", 0.012)))
        if kind == "DDIMScheduler":
            args.update(
                set_alpha_to_one=bool(cfg.get("set_alpha_to_one", False)), steps_offset=int(cfg.get("steps_offset", 1))
            )
        args.update(kwargs)
        return getattr(schedulers, kind)(**args)
