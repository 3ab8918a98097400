"""Load a trained segmentation bundle as a *segmenter*: the network, its preprocessing settings, predictions and
pooled encoder features. The segmenter trained on the real data is the judge of generated pairs (faithfulness,
the feature space of FID/KID, the MedDiff-FT quality filter).

Loading by path::

    seg = load_segmenter("bundles/segmentation", configs=["train.json", "demo.json"])   # models/model.pt
    seg = load_segmenter("runs/x/models/model_final.pt")   # beside a segmenter.json written at training
    labels = seg.predict(images)            # (B, 1, H, W) class map, images in [-1, 1]
    feats = seg.features(images)            # (B, F) pooled encoder features
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from monai_siamese.bundles import config_files
from monai_siamese.utils import atomic_write_json

__all__ = [
    "SPEC_FILE",
    "FeaturePool",
    "SegmenterSettings",
    "Segmenter",
    "save_segmenter_spec",
    "load_segmenter",
    "default_feature_layers",
    "encoder_features",
]

#: name of the file that tells :func:`load_segmenter` how to rebuild the network of a weights file
SPEC_FILE = "segmenter.json"
#: weights looked for in a checkpoint folder, in order
WEIGHT_NAMES = ("model.pt", "model_final.pt", "model.safetensors")
#: config keys read as preprocessing settings (names as in ``bundles/segmentation/configs/train.json``)
_SETTING_KEYS = {
    "num_classes": "num_classes",
    "image_channels": "image_channels",
    "spatial_size": "spatial_size",
    "preset": "preset",
    "window": "ct_window",
    "percentiles": "mr_percentiles",
    "label_mapping": "label_mapping",
    "label_threshold": "label_threshold",
    "slice_axis": "slice_axis",
    "min_foreground": "min_foreground",
    "foreground_classes": "foreground_classes",
}


class FeaturePool(str, Enum):
    """How a feature map ``(B, C, H, W)`` becomes a vector ``(B, C)``."""

    MEAN = "mean"  # global average pooling
    MAX = "max"  # global max pooling
    MEANMAX = "meanmax"  # both, concatenated (2C)


@dataclass
class SegmenterSettings:
    """The preprocessing a segmenter was trained with (what its inputs must look like).

    Args:
        num_classes: classes including background.
        spatial_size: the network's input size ``(H, W)``.
        image_channels: image channels.
        preset: intensity preset (images are scaled to [-1, 1] with it).
        window: CT window.
        percentiles: MR percentiles.
        label_mapping: label remap.
        label_threshold: binarisation threshold for lossy masks.
        slice_axis: slicing axis for 3D volumes.
        min_foreground: minimum foreground per kept slice.
        foreground_classes: classes counted as foreground.
    """

    num_classes: int
    spatial_size: tuple[int, int]
    image_channels: int = 1
    preset: str = "mr"
    window: tuple[float, float] = (-160.0, 240.0)
    percentiles: tuple[float, float] = (0.5, 99.5)
    label_mapping: dict[int, int] | None = None
    label_threshold: float | None = None
    slice_axis: int = 2
    min_foreground: float = 1
    foreground_classes: list[int] | None = field(default=None)

    def __post_init__(self) -> None:
        size = self.spatial_size
        self.spatial_size = (int(size), int(size)) if isinstance(size, int) else tuple(int(s) for s in size)
        self.window = tuple(float(v) for v in self.window)
        self.percentiles = tuple(float(v) for v in self.percentiles)
        if self.label_mapping is not None:
            self.label_mapping = {int(k): int(v) for k, v in self.label_mapping.items()}

    def load_transform(self) -> Any:
        """The MONAI transform that loads and normalises a datalist entry (:func:`~monai_siamese.data.pair_load_transform`)."""
        from monai_siamese.data import pair_load_transform

        return pair_load_transform(
            self.num_classes,
            preset=self.preset,
            window=self.window,
            percentiles=self.percentiles,
            label_mapping=self.label_mapping,
            label_threshold=self.label_threshold,
        )

    def slice_transform(self, spatial_size: Sequence[int] | None = None) -> Any:
        """The transform fitting a slice to the network size (or to ``spatial_size``)."""
        from monai_siamese.data import fit_slice_transform

        return fit_slice_transform(tuple(spatial_size or self.spatial_size))

    def dataset(
        self, entries: Sequence[Mapping], spatial_size: Sequence[int] | None = None, min_foreground: float | None = None
    ) -> Any:
        """A cached :class:`~monai_siamese.data.SliceDataset` of ``entries`` preprocessed as for this segmenter.

        Args:
            entries: datalist entries with absolute paths.
            spatial_size: fit slices to this size instead of the network's (e.g. a generator's size).
            min_foreground: override the foreground filter (0 keeps every slice).
        """
        from monai_siamese.data import SliceDataset

        return SliceDataset(
            data=list(entries),
            load_transform=self.load_transform(),
            axis=self.slice_axis,
            min_foreground=self.min_foreground if min_foreground is None else min_foreground,
            foreground_classes=self.foreground_classes,
            slice_transform=self.slice_transform(spatial_size),
            progress=False,
        )


def _unet_bottleneck(network: nn.Module) -> str | None:
    """Name of the deepest encoder module of a MONAI ``UNet`` (its nested ``SkipConnection`` structure)."""
    from monai.networks.layers import SkipConnection

    model = getattr(network, "model", None)
    if not isinstance(model, nn.Sequential) or len(model) < 2 or not isinstance(model[1], SkipConnection):
        return None
    name, seq = "model", model
    while True:
        sub = seq[1].submodule
        name = f"{name}.1.submodule"
        if isinstance(sub, nn.Sequential) and len(sub) >= 2 and isinstance(sub[1], SkipConnection):
            seq = sub
            continue
        return name


def default_feature_layers(network: nn.Module) -> list[str]:
    """The module(s) whose outputs are the "encoder features" of ``network``: the bottleneck of a MONAI ``UNet``,
    the last encoder stage of a ``SegResNet``, else the module of a ``feature_layers`` attribute.

    Raises:
        ValueError: for an unknown architecture without ``feature_layers``; pass ``layers`` explicitly.
    """
    net = network.module if isinstance(network, nn.parallel.DistributedDataParallel) else network
    layers = getattr(net, "feature_layers", None)
    if layers:
        return [layers] if isinstance(layers, str) else list(layers)
    name = _unet_bottleneck(net)
    if name is not None:
        return [name]
    down = getattr(net, "down_layers", None)
    if isinstance(down, nn.ModuleList) and len(down) > 0:
        return [f"down_layers.{len(down) - 1}"]
    raise ValueError(
        f"no default encoder layer for {type(net).__name__}: pass layers=[module names] "
        f"(see network.named_modules())"
    )


@torch.no_grad()
def encoder_features(
    network: nn.Module,
    images: torch.Tensor,
    layers: Sequence[str] | None = None,
    pool: FeaturePool | str = FeaturePool.MEAN,
    batch_size: int = 32,
) -> torch.Tensor:
    """Pooled encoder features of a segmentation network for an image batch.

    Forward hooks collect the outputs of ``layers`` (default :func:`default_feature_layers`: the bottleneck), each
    is pooled over space, and the vectors are concatenated.

    Args:
        network: the segmentation network (put in eval mode here).
        images: ``(B, C, H, W)`` images as the network expects them (preprocessed, network size).
        layers: module names (``dict(network.named_modules())`` keys) whose outputs are pooled.
        pool: ``mean``, ``max`` or ``meanmax``.
        batch_size: images per forward pass.

    Returns:
        ``(B, F)`` float32 features on the CPU.
    """
    pool = FeaturePool(pool)
    layers = list(layers) if layers else default_feature_layers(network)
    modules = dict(network.named_modules())
    missing = [n for n in layers if n not in modules]
    if missing:
        raise ValueError(f"no module {missing} in {type(network).__name__}")
    device = next(network.parameters()).device
    outputs: dict[str, torch.Tensor] = {}
    hooks = [
        modules[n].register_forward_hook(lambda m, i, o, n=n: outputs.__setitem__(n, o)) for n in layers
    ]  # fmt: skip
    was_training = network.training
    network.eval()
    feats = []
    try:
        for start in range(0, images.shape[0], batch_size):
            outputs.clear()
            network(torch.as_tensor(images[start : start + batch_size]).float().to(device))
            parts = []
            for n in layers:
                fmap = torch.as_tensor(outputs[n]).float().flatten(2)
                if pool in (FeaturePool.MEAN, FeaturePool.MEANMAX):
                    parts.append(fmap.mean(-1))
                if pool in (FeaturePool.MAX, FeaturePool.MEANMAX):
                    parts.append(fmap.amax(-1))
            feats.append(torch.cat(parts, 1).cpu())
    finally:
        for h in hooks:
            h.remove()
        network.train(was_training)
    return torch.cat(feats, 0) if feats else torch.zeros(0, 0)


class Segmenter:
    """A trained segmentation network with its preprocessing settings.

    Inputs are images already scaled to [-1, 1] (the shared intensity presets); images of another size are resized
    (bilinear) to the network size and predictions are resized back, so a segmenter trained at 128 x 128 can judge
    64 x 64 generated images.

    Args:
        network: the segmentation network (logits ``(B, num_classes, H, W)``).
        settings: its preprocessing settings.
        device: device to run on (default: the network's).
        feature_layers: modules pooled by :meth:`features` (default :func:`default_feature_layers`).
        source: where it was loaded from (for reports).
    """

    def __init__(
        self,
        network: nn.Module,
        settings: SegmenterSettings,
        device: torch.device | str | None = None,
        feature_layers: Sequence[str] | None = None,
        source: str = "",
    ) -> None:
        self.device = torch.device(device) if device is not None else next(network.parameters()).device
        self.network = network.to(self.device).eval()
        self.settings = settings
        self.feature_layers = list(feature_layers) if feature_layers else default_feature_layers(network)
        self.source = source

    @property
    def num_classes(self) -> int:
        return self.settings.num_classes

    def _fit(self, images: torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(images).float()
        if x.ndim == 3:
            x = x[None]
        if tuple(x.shape[2:]) != tuple(self.settings.spatial_size):
            x = F.interpolate(x, size=self.settings.spatial_size, mode="bilinear", align_corners=False)
        return x

    @torch.no_grad()
    def predict_logits(self, images: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
        """Logits ``(B, num_classes, H, W)`` at the input's size (CPU)."""
        size = tuple(images.shape[-2:])
        out = []
        for start in range(0, images.shape[0], batch_size):
            x = self._fit(images[start : start + batch_size]).to(self.device)
            logits = self.network(x).float()
            if tuple(logits.shape[2:]) != size:
                logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
            out.append(logits.cpu())
        return torch.cat(out, 0)

    def predict(self, images: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
        """Predicted class map ``(B, 1, H, W)`` (long) at the input's size."""
        return self.predict_logits(images, batch_size).argmax(1, keepdim=True)

    def features(
        self, images: torch.Tensor, pool: FeaturePool | str = FeaturePool.MEAN, batch_size: int = 32
    ) -> torch.Tensor:
        """Pooled encoder features ``(B, F)`` of images in [-1, 1] (resized to the network size first)."""
        return encoder_features(self.network, self._fit(images), self.feature_layers, pool, batch_size)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.predict(images)


def save_segmenter_spec(
    folder: str | os.PathLike,
    bundle: str | os.PathLike,
    configs: Sequence[str] = ("train.json",),
    overrides: Mapping[str, Any] | None = None,
    weights: str | None = None,
) -> str:
    """Write ``segmenter.json`` into ``folder`` (a checkpoint folder): how to rebuild the network whose weights are
    there, so :func:`load_segmenter` can load them by path.

    Args:
        folder: checkpoint folder.
        bundle: the segmentation bundle folder.
        configs: config files of the bundle's ``configs/`` used for training.
        overrides: config overrides used for training (plain JSON values).
        weights: weights file name in ``folder`` to load by default (else the first of ``model.pt``,
            ``model_final.pt``, ``model.safetensors`` found).
    """
    path = Path(folder) / SPEC_FILE
    spec = {
        "bundle": str(Path(bundle).resolve()),
        "configs": list(configs),
        "overrides": {k: v for k, v in dict(overrides or {}).items()},
        "weights": weights,
    }
    atomic_write_json(path, spec)
    return str(path)


def _settings_from_parser(parser: Any) -> SegmenterSettings:
    kwargs = {}
    for name, key in _SETTING_KEYS.items():
        if key in parser:
            kwargs[name] = parser.get_parsed_content(key)
    if "num_classes" not in kwargs or "spatial_size" not in kwargs:
        raise ValueError("the segmenter config needs 'num_classes' and 'spatial_size'")
    return SegmenterSettings(**kwargs)


def _find_weights(folder: Path, name: str | None = None) -> Path:
    if name:
        return folder / name
    for n in WEIGHT_NAMES:
        if (folder / n).is_file():
            return folder / n
    raise FileNotFoundError(f"{folder}: no weights ({', '.join(WEIGHT_NAMES)})")


def load_segmenter(
    source: str | os.PathLike,
    configs: Sequence[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    weights: str | os.PathLike | None = None,
    device: torch.device | str | None = None,
    feature_layers: Sequence[str] | None = None,
) -> Segmenter:
    """Load a trained segmentation bundle's network and preprocessing settings by path.

    ``source`` is one of:

    - a bundle folder (with ``configs/train.json``): the network is built from ``configs`` (default
      ``["train.json"]``) plus ``overrides``; weights are ``weights`` or the first of ``model.pt``,
      ``model_final.pt``, ``model.safetensors`` in the config's ``ckpt_dir``;
    - a checkpoint folder or a weights file beside a ``segmenter.json`` (written by :func:`save_segmenter_spec`,
      e.g. by ``python -m monai_siamese evaluate``): bundle, configs and overrides come from it.

    Weights are read with ``torch.load(weights_only=True)`` or safetensors; full training checkpoints
    (``checkpoint_final.pt``) work too (their ``network`` entry is used).

    Args:
        source: bundle folder, checkpoint folder or weights file.
        configs: bundle config files (``configs/`` names), for a bundle folder.
        overrides: config overrides (``{"num_classes": 3, "network_def#channels": [...]}``).
        weights: weights file (default: see above).
        device: device (default: cuda when available).
        feature_layers: encoder modules used by :meth:`Segmenter.features`.
    """
    from monai.bundle import ConfigParser

    from monai_siamese.networks.weights import load_weights
    from monai_siamese.utils import default_device

    src = Path(source).expanduser()
    spec_overrides: dict[str, Any] = {}
    if (src / "configs" / "train.json").is_file():
        bundle = src
        cfgs = list(configs or ["train.json"])
        weight_file = Path(weights) if weights else None
        spec_dir = None
    else:
        spec_dir = src if src.is_dir() else src.parent
        spec_path = spec_dir / SPEC_FILE
        if not spec_path.is_file():
            raise FileNotFoundError(
                f"{src}: not a segmentation bundle folder and no {SPEC_FILE} beside it; pass the bundle folder "
                f"(load_segmenter('bundles/segmentation', weights='{src}', configs=[...]))"
            )
        spec = json.loads(spec_path.read_text())
        bundle = Path(spec["bundle"])
        if not (bundle / "configs").is_dir():
            # the bundle folder the weights were trained from has moved (another checkout, another machine): the
            # same bundle of this installation
            from monai_siamese.bundles import bundles_dir

            bundle = bundles_dir() / bundle.name
        cfgs = list(configs or spec.get("configs") or ["train.json"])
        spec_overrides = dict(spec.get("overrides") or {})
        weight_file = (
            Path(weights) if weights else (src if src.is_file() else _find_weights(spec_dir, spec.get("weights")))
        )
    parser = ConfigParser()
    parser.read_config(config_files(bundle, cfgs))
    parser["bundle_root"] = str(bundle)
    dev = torch.device(device) if device is not None else default_device()
    parser["device"] = f"$torch.device('{dev}')"
    for k, v in {**spec_overrides, **dict(overrides or {})}.items():
        parser[k] = v
    if spec_dir is not None and "ckpt_dir" not in {**spec_overrides, **dict(overrides or {})}:
        parser["ckpt_dir"] = str(spec_dir)
    settings = _settings_from_parser(parser)
    network = parser.get_parsed_content("network_def")
    if weight_file is None:
        weight_file = _find_weights(Path(parser.get_parsed_content("ckpt_dir")))
    load_weights(network, weight_file)
    return Segmenter(network, settings, device=dev, feature_layers=feature_layers, source=str(weight_file))
