"""Loading and saving weights safely: ``torch.load(weights_only=True)`` or safetensors, atomic writes."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from monai_siamese.utils import atomic_path

__all__ = ["load_state_dict_file", "load_weights", "save_weights"]

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


def load_weights(module: nn.Module, path: str | os.PathLike, key: str | None = None, strict: bool = True) -> nn.Module:
    """Load weights from ``path`` into ``module`` (see :func:`load_state_dict_file`); returns the module."""
    state = load_state_dict_file(path, key)
    target = module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module
    missing, unexpected = target.load_state_dict(state, strict=False)
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
