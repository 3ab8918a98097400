"""Loading and saving weights safely: ``torch.load(weights_only=True)`` or safetensors, atomic writes."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from monai_siamese.utils import atomic_path

__all__ = ["load_state_dict_file", "load_weights", "load_pretrained", "save_weights", "adapt_input_channels"]

_NESTED_KEYS = ("ema", "model", "network", "state_dict", "unet")


def load_state_dict_file(path: str | os.PathLike, key: str | None = None) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or a ``torch.save`` file (``weights_only=True``).

    A checkpoint holding several objects (``{"network": ..., "ema": ...}``) is unpacked with ``key``, or with
    the first of ``ema``, ``model``, ``network``, ``state_dict``, ``unet`` that it has. ``module.`` prefixes
    (DistributedDataParallel) are removed.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weights file not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path), device="cpu")
    else:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    if key is not None:
        if key not in state:
            raise KeyError(f"{path}: no '{key}' in checkpoint (keys: {sorted(state)[:10]})")
        state = state[key]
    elif isinstance(state, Mapping) and not all(isinstance(v, torch.Tensor) for v in state.values()):
        for k in _NESTED_KEYS:
            if k in state and isinstance(state[k], Mapping):
                state = state[k]
                break
    return {(k[7:] if k.startswith("module.") else k): v for k, v in state.items()}


def adapt_input_channels(
    state: Mapping[str, torch.Tensor], target: nn.Module
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Fit weights whose input channels differ from ``target``'s (e.g. a segmentation-guided UNet with image + mask
    channels loaded into an inpainting UNet with image + mask + masked-image channels).

    For every tensor of the state whose shape differs from the target's only in dimension 1 (the input channels
    of a convolution), the shared leading channels are copied and extra target channels are zero-initialised, so
    the adapted network initially ignores the new inputs and behaves as the pretrained one. Returns the adapted
    state and the names of the adapted tensors.
    """
    own = target.state_dict()
    out, adapted = dict(state), []
    for k, v in state.items():
        if k not in own or own[k].shape == v.shape:
            continue
        w = own[k]
        if v.ndim == w.ndim and v.ndim >= 2 and v.shape[0] == w.shape[0] and v.shape[2:] == w.shape[2:]:
            new = torch.zeros_like(w)
            n = min(v.shape[1], w.shape[1])
            new[:, :n] = v[:, :n]
            out[k] = new
            adapted.append(k)
    return out, adapted


def load_weights(
    module: nn.Module,
    path: str | os.PathLike,
    key: str | None = None,
    strict: bool = True,
    adapt_channels: bool = False,
) -> nn.Module:
    """Load weights from ``path`` into ``module`` (see :func:`load_state_dict_file`); returns the module.

    Args:
        module: target network.
        path: ``.safetensors`` or ``torch.save`` file.
        key: entry of a multi-object checkpoint.
        strict: raise on missing / unexpected / mismatched keys.
        adapt_channels: fit convolutions whose input channels differ (see :func:`adapt_input_channels`).
    """
    state = load_state_dict_file(path, key)
    target = module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module
    if adapt_channels:
        state, adapted = adapt_input_channels(state, target)
        if adapted:
            import logging

            logging.getLogger(__name__).info(f"{path}: adapted input channels of {adapted}")
    try:
        missing, unexpected = target.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatches raise even with strict=False
        raise RuntimeError(f"{path}: weights do not fit the network ({str(e).splitlines()[-1].strip()})") from e
    if strict and (missing or unexpected):
        raise RuntimeError(
            f"{path}: weights do not match the network: {len(missing)} missing (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]}); check the network settings of the config"
        )
    return module


def save_weights(module: nn.Module | Mapping[str, torch.Tensor], path: str | os.PathLike) -> str:
    """Save a module's state dict (or a state dict) atomically as safetensors or torch file, by extension."""
    if isinstance(module, nn.Module):
        target = module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module
        state = target.state_dict()
    else:
        state = dict(module)
    state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    with atomic_path(path) as tmp:
        if str(path).endswith(".safetensors"):
            from safetensors.torch import save_file

            save_file(state, tmp)
        else:
            torch.save(state, tmp)
    return str(path)


def load_pretrained(module: nn.Module, path: str | os.PathLike | None, purpose: str = "fine-tuning") -> nn.Module:
    """Initialise ``module`` from a pretrained checkpoint for fine-tuning, adapting input channels (see
    :func:`adapt_input_channels`); a missing path is an error that says how to make one.

    ``path`` may be a weights file or a bundle folder (its ``models/model.safetensors`` is used).
    """
    if path is None or str(path).lower() in ("", "none"):
        raise ValueError(f"{purpose}: pretrained_path is not set; give a weights file or a trained bundle folder")
    p = Path(path)
    if p.is_dir():
        p = p / "models" / "model.safetensors" if (p / "models").is_dir() else p / "model.safetensors"
    if not p.is_file():
        raise FileNotFoundError(
            f"{purpose}: pretrained weights {p} not found. Train the base model first, e.g. "
            "python -m monai.bundle run training --config_file bundles/seg_guided_diffusion/configs/train.json "
            "(same network settings), or set --pretrained_path to a weights file"
        )
    return load_weights(module, p, adapt_channels=True)
