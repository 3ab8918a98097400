"""Loading and saving weights safely: ``torch.load(weights_only=True)`` or safetensors, atomic writes; safetensors
files carry the settings they were trained with, and loading checks them against the config."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from monai_siamese.errors import WeightsError
from monai_siamese.utils import atomic_path

__all__ = [
    "SETTINGS_KEY",
    "load_state_dict_file",
    "load_weights",
    "load_pretrained",
    "save_weights",
    "adapt_input_channels",
    "read_settings",
    "check_settings",
]

#: safetensors metadata key of the training settings (a JSON string)
SETTINGS_KEY = "monai_siamese.trained_with"


def _reason(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return f"{type(error).__name__}: {text[:200]}"


def read_settings(path: str | os.PathLike) -> dict[str, Any] | None:
    """The training settings stored in a ``.safetensors`` file by :func:`save_weights` (None when it has none or is
    another format).

    Raises:
        WeightsError: the file is missing, truncated or not a safetensors file.
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        return None
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # noqa: BLE001 - any reader failure means an unusable file
        raise WeightsError(f"{path}: not a readable safetensors file (truncated or corrupt? {_reason(e)})") from e
    text = meta.get(SETTINGS_KEY)
    return json.loads(text) if text else None


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


def check_settings(path: str | os.PathLike, expected: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Compare the settings stored with the weights at ``path`` with ``expected`` (the config's ``trained_with``);
    keys missing on either side are not compared. Returns the stored settings.

    Raises:
        WeightsError: one line naming every key that disagrees, with both values.
    """
    stored = read_settings(path)
    if stored is None or not expected:
        return stored
    diffs = []

    def walk(prefix: str, exp: Any, got: Any) -> None:
        if isinstance(exp, Mapping) and isinstance(got, Mapping):
            for k in exp:
                if k in got:
                    walk(f"{prefix}#{k}" if prefix else str(k), exp[k], got[k])
        elif exp != got:
            diffs.append(f"{prefix} (config {json.dumps(exp)}, weights {json.dumps(got)})")

    walk("", _plain(dict(expected)), stored)
    if diffs:
        raise WeightsError(
            f"{path}: trained with other settings than this config: {'; '.join(diffs)}. Give the configs it was "
            "trained with (e.g. add demo.json) or set these keys to the weights' values"
        )
    return stored


_NESTED_KEYS = ("ema", "model", "network", "state_dict", "unet")


def load_state_dict_file(path: str | os.PathLike, key: str | None = None) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or a ``torch.save`` file (``weights_only=True``).

    A checkpoint holding several objects (``{"network": ..., "ema": ...}``) is unpacked with ``key``, or with
    the first of ``ema``, ``model``, ``network``, ``state_dict``, ``unet`` that it has. ``module.`` prefixes
    (DistributedDataParallel) are removed.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any reader failure means an unusable file
        raise WeightsError(f"{path}: cannot read the weights (truncated or corrupt? {_reason(e)})") from e
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
    expected: Mapping[str, Any] | None = None,
) -> nn.Module:
    """Load weights from ``path`` into ``module`` (see :func:`load_state_dict_file`); returns the module.

    Args:
        module: target network.
        path: ``.safetensors`` or ``torch.save`` file.
        key: entry of a multi-object checkpoint.
        strict: raise on missing / unexpected / mismatched keys.
        adapt_channels: fit convolutions whose input channels differ (see :func:`adapt_input_channels`).
        expected: the config's training settings (``trained_with``), checked against those stored with the weights
            first (:func:`check_settings`), so a sampling config that disagrees with training fails in one line.
    """
    check_settings(path, expected)
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
        raise WeightsError(f"{path}: weights do not fit the network ({str(e).splitlines()[-1].strip()})") from e
    if strict and (missing or unexpected):
        raise WeightsError(
            f"{path}: weights do not match the network: {len(missing)} missing (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]}); check the network settings of the config"
        )
    return module


def save_weights(
    module: nn.Module | Mapping[str, torch.Tensor], path: str | os.PathLike, settings: Mapping[str, Any] | None = None
) -> str:
    """Save a module's state dict (or a state dict) atomically as safetensors or torch file, by extension; a
    safetensors file also stores ``settings`` (JSON) in its metadata (see :func:`read_settings`)."""
    if isinstance(module, nn.Module):
        target = module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module
        state = target.state_dict()
    else:
        state = dict(module)
    state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    with atomic_path(path) as tmp:
        if str(path).endswith(".safetensors"):
            from safetensors.torch import save_file

            meta = {SETTINGS_KEY: json.dumps(_plain(dict(settings)))} if settings else None
            save_file(state, tmp, metadata=meta)
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
