"""What a MONAI Label request may send to the app: request parameters are data, never config code.

MONAI's config parser evaluates strings that start with ``$`` (Python expressions), resolves ``@`` references and
``%`` macros (``#`` separates the parts of a reference) and instantiates any JSON object with a ``_target_``. A value
that arrives over the network must therefore never reach a bundle config unchecked. This module is the one place
that says what a request may send:

- :data:`REQUEST_OVERRIDES`: per task kind (``synthesis``, ``training``, ``segmentation``), the config keys a
  request's ``overrides`` may set and the plain JSON each one takes (:class:`Param`);
- :data:`SYNTHESIS_PARAMS`, :data:`PAIRS_PARAMS`, :data:`TRAINING_PARAMS`: the other request parameters of the tasks;
- :func:`request_overrides`, :func:`check_params`, :func:`check_device`, :func:`check_choice`: the validators, which
  run before anything is parsed or run and raise :class:`RequestError` naming the parameter;
- :func:`resolve_output_dir` and :func:`check_inside`: server-side paths stay inside the roots the server was
  started with.

The server operator's own ``--conf overrides`` file and the evaluation's command-line ``--gen_overrides`` are not
requests: they are not checked here. No ``monailabel`` import: testable in any venv with this package.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

__all__ = [
    "RequestError",
    "ParamKind",
    "Param",
    "SAMPLING_OVERRIDES",
    "TRAINING_OVERRIDES",
    "SEGMENTATION_OVERRIDES",
    "REQUEST_OVERRIDES",
    "SYNTHESIS_PARAMS",
    "PAIRS_PARAMS",
    "TRAINING_PARAMS",
    "FILL_CHOICES",
    "check_plain",
    "check_params",
    "check_choice",
    "check_device",
    "parse_overrides",
    "request_overrides",
    "check_inside",
    "resolve_output_dir",
]

#: string prefixes MONAI's config parser gives a meaning to: expression, reference, macro
CODE_PREFIXES = ("$", "@", "%")
#: the separator of config ids in references (``@network_def#channels``, ``%file.json#key``)
ID_SEPARATOR = "#"
MAX_STRING = 128
MAX_LIST = 64
SEED_MAX = 2**32 - 1


class RequestError(ValueError):
    """A request parameter was refused. The MONAI Label tasks answer it with HTTP 400 and this message."""


class ParamKind(str, Enum):
    """The plain JSON a request parameter takes."""

    INT = "int"
    FLOAT = "float"
    BOOL = "bool"
    CHOICE = "choice"  # one string of ``choices``
    INTS = "ints"  # a list of integers
    FLOATS = "floats"  # a list of numbers


@dataclass(frozen=True)
class Param:
    """One allowed request parameter (or override key) and the plain JSON value it takes.

    Args:
        kind: the value's type (:class:`ParamKind`).
        low: smallest value (numbers, and every item of a list).
        high: largest value.
        choices: the allowed strings of a ``choice``.
        nullable: ``null`` is allowed.
        scalar_or_list: an ``int``/``float`` that may also be sent as a list of them (per-class values).
        help: what it sets (shown in errors and the README).
    """

    kind: ParamKind
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = field(default_factory=tuple)
    nullable: bool = False
    scalar_or_list: bool = False
    help: str = ""

    def describe(self) -> str:
        if self.kind == ParamKind.CHOICE:
            text = " | ".join(self.choices)
        else:
            text = self.kind.value
            if self.low is not None or self.high is not None:
                text += f" in [{'' if self.low is None else _num(self.low)}, {'' if self.high is None else _num(self.high)}]"
            if self.scalar_or_list:
                text += " (or a list)"
        return text + (" or null" if self.nullable else "")

    def check(self, name: str, value: Any) -> Any:
        """Return ``value`` normalised (a number sent as a decimal string becomes the number); raise
        :class:`RequestError` naming ``name`` when it is not this parameter's plain JSON."""
        check_plain(name, value)
        if value is None:
            if self.nullable:
                return None
            raise RequestError(f"{name}: null is not accepted (expected {self.describe()})")
        kind = self.kind
        if kind in (ParamKind.INT, ParamKind.FLOAT) and self.scalar_or_list and isinstance(value, (list, tuple)):
            kind = ParamKind.INTS if kind == ParamKind.INT else ParamKind.FLOATS
        if kind == ParamKind.BOOL:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false"):
                return value.lower() == "true"
            raise RequestError(f"{name}: expected true or false, got {_show(value)}")
        if kind == ParamKind.CHOICE:
            if isinstance(value, (list, tuple)) and value:  # MONAI Label's panel sends an option list unchosen
                value = value[0]
            if not isinstance(value, str) or value not in self.choices:
                raise RequestError(f"{name}: expected one of {list(self.choices)}, got {_show(value)}")
            return value
        if kind in (ParamKind.INTS, ParamKind.FLOATS):
            if not isinstance(value, (list, tuple)):
                raise RequestError(f"{name}: expected a list of numbers, got {_show(value)}")
            item = ParamKind.INT if kind == ParamKind.INTS else ParamKind.FLOAT
            return [self._number(f"{name}[{i}]", v, item) for i, v in enumerate(value)]
        return self._number(name, value, kind)

    def _number(self, name: str, value: Any, kind: ParamKind) -> int | float:
        if isinstance(value, str) and re.fullmatch(r"-?\d+(\.\d*)?([eE][-+]?\d+)?", value.strip()):
            value = json.loads(value.strip())  # "3" from a form field: a number
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RequestError(
                f"{name}: expected {'an integer' if kind == ParamKind.INT else 'a number'}, got {_show(value)}"
            )
        if kind == ParamKind.INT:
            if isinstance(value, float):
                if not value.is_integer():
                    raise RequestError(f"{name}: expected an integer, got {_show(value)}")
                value = int(value)
        else:
            value = float(value)
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            raise RequestError(f"{name}: {value} outside [{_num(self.low)}, {_num(self.high)}]")
        return value


def _num(x: float | None) -> str:
    if x is None:
        return ""
    return str(int(x)) if float(x).is_integer() else str(x)


def _show(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _int(low: float | None = None, high: float | None = None, **kw: Any) -> Param:
    return Param(ParamKind.INT, low, high, **kw)


def _float(low: float | None = None, high: float | None = None, **kw: Any) -> Param:
    return Param(ParamKind.FLOAT, low, high, **kw)


def _bool(**kw: Any) -> Param:
    return Param(ParamKind.BOOL, **kw)


def _choice(*choices: str, **kw: Any) -> Param:
    return Param(ParamKind.CHOICE, choices=tuple(choices), **kw)


def _ints(low: float | None = None, high: float | None = None, **kw: Any) -> Param:
    return Param(ParamKind.INTS, low, high, **kw)


def _floats(low: float | None = None, high: float | None = None, **kw: Any) -> Param:
    return Param(ParamKind.FLOATS, low, high, **kw)


#: samplers of :func:`monai_siamese.diffusion.make_scheduler` (:class:`~monai_siamese.diffusion.SamplerType`)
SAMPLERS = ("ddim", "ddpm", "dpmpp_2m", "euler")
#: mask sources of :mod:`monai_siamese.masks` a request may name (mixtures only through the server's own config)
MASK_SOURCES = ("regime", "augmented", "generated", "interpolated")
#: values of voxels a synthesis request does not synthesise
FILL_CHOICES = ("min", "zero", "source")

#: config keys of the generator bundles' ``inference.json`` a synthesis or batch-generation request may override
#: (sampling, slicing, and MedDiff-FT's mask generator, guiding mask, erosion and quality filter). The seed, the
#: number of samples, the masks and every path come from the request's own parameters or from the server.
SAMPLING_OVERRIDES: dict[str, Param] = {
    "num_inference_steps": _int(1, 1000, help="denoising steps"),
    "sampler": _choice(*SAMPLERS, help="sampling scheduler"),
    "eta": _float(0.0, 1.0, help="DDIM stochasticity"),
    "guidance_scale": _float(0.0, 50.0, help="classifier-free guidance weight (1: none)"),
    "interpolation_lambda": _float(0.0, 1.0, nullable=True, help="latent interpolation with the real image"),
    "interpolation_t": _int(0, 10000, help="timestep of the latent interpolation"),
    "batch_size": _int(1, 256, help="images sampled at once"),
    "max_masks": _int(1, 1_000_000, nullable=True, help="masks used (batch generation)"),
    "slice_axis": _int(0, 2, help="axis 3D volumes are sliced along (RAS)"),
    "min_foreground": _int(0, 100_000_000, help="foreground pixels a slice needs"),
    "foreground_classes": _ints(0, 255, nullable=True, help="classes counted as foreground"),
    "mask_source": _choice(*MASK_SOURCES, help="conditioning masks: the given ones, or new ones made from them"),
    "masks_per_real": _int(1, 1024, help="new masks per given mask (mask sources other than regime)"),
    # MedDiff-FT
    "num_real_pairs": _int(1, 1_000_000, help="MedDiff-FT: real pairs used as canvases"),
    "margin_fraction": _float(0.0, 1.0, help="MedDiff-FT guiding mask: margin / structure size"),
    "min_margin": _float(0.0, 1000.0, help="MedDiff-FT guiding mask: smallest margin (pixels)"),
    "guiding_power": _float(0.0, 100.0, help="MedDiff-FT guiding mask: shrink exponent over t"),
    "mask_area_tolerance": _float(0.0, 10.0, help="MedDiff-FT mask generator: allowed class-area change"),
    "mask_flip_axes": _ints(0, 2, help="MedDiff-FT mask generator: flipped axes"),
    "mask_rotate_range": _float(0.0, 3.1416, help="MedDiff-FT mask generator: rotation (radians)"),
    "mask_scale_range": _float(0.0, 1.0, help="MedDiff-FT mask generator: scale change"),
    "mask_translate_fraction": _float(0.0, 1.0, help="MedDiff-FT mask generator: shift / size"),
    "mask_elastic_spacing": _float(1.0, 1000.0, help="MedDiff-FT mask generator: elastic grid spacing"),
    "mask_elastic_magnitude": _floats(0.0, 100.0, help="MedDiff-FT mask generator: elastic magnitude range"),
    "mask_boundary_pixels": _float(0.0, 100.0, help="MedDiff-FT mask generator: boundary noise"),
    "erosion_radius": _int(0, 64, scalar_or_list=True, help="MedDiff-FT: label erosion radius (per class)"),
    "erosion_against": _choice("background", "any", help="MedDiff-FT: what erosion removes pixels against"),
    "erosion_max_fraction": _float(0.0, 1.0, help="MedDiff-FT: a class losing more than this to erosion is kept"),
    "use_quality_filter": _bool(help="MedDiff-FT: apply the quality filter"),
    "quality_dice_threshold": _float(0.0, 1.0, help="quality filter: faithfulness Dice threshold"),
    "quality_k": _int(1, 100, help="quality filter: k-th neighbour of the outlier test"),
    "quality_percentile": _float(0.0, 100.0, help="quality filter: outlier percentile"),
    "quality_intensity_sigma": _float(0.0, 100.0, help="quality filter: intensity range in sigmas"),
}

#: config keys of the bundles' ``train.json`` a training request may override (optimisation, schedule, logging
#: and augmentation). ``num_iterations`` is set from MONAI Label's ``max_epochs`` x ``epoch_length``; data, network,
#: device and paths come from the server.
TRAINING_OVERRIDES: dict[str, Param] = {
    "epoch_length": _int(1, 1_000_000, help="iterations per epoch (max_epochs counts these)"),
    "lr": _float(0.0, 1.0, help="learning rate"),
    "batch_size": _int(1, 1024, help="batch size"),
    "weight_decay": _float(0.0, 1.0, help="AdamW weight decay"),
    "warmup_steps": _int(0, 10_000_000, help="LR warm-up iterations"),
    "grad_clip": _float(0.0, 1e6, help="gradient clipping norm"),
    "seed": _int(0, SEED_MAX, help="random seed"),
    "num_workers": _int(0, 32, help="data loader workers"),
    "amp": _bool(help="mixed precision"),
    "checkpoint_interval": _int(1, 10_000_000, help="iterations between checkpoints"),
    "checkpoints_kept": _int(1, 100, help="checkpoints kept"),
    "log_interval": _int(1, 10_000_000, help="iterations between log lines"),
    "val_interval": _int(1, 10_000_000, help="segmentation: epochs between validations"),
    "sample_interval": _int(1, 10_000_000, help="generators: iterations between sample grids"),
    "sample_steps": _int(1, 1000, help="generators: denoising steps of the sample grids"),
    "sample_masks": _int(1, 64, help="generators: masks in a sample grid"),
    "max_train_slices": _int(1, 10_000_000, nullable=True, help="training slices used"),
    "min_foreground": _int(0, 100_000_000, help="foreground pixels a slice needs"),
    "slice_axis": _int(0, 2, help="axis 3D volumes are sliced along (RAS)"),
    "foreground_classes": _ints(0, 255, nullable=True, help="classes counted as foreground"),
    "ema_momentum": _float(0.0, 1.0, help="EMA momentum"),
    "ema_momentum_warmup": _float(0.0, 1.0, help="EMA momentum during warm-up"),
    "ema_warmup_iters": _int(0, 10_000_000, help="EMA warm-up iterations"),
    "cond_dropout_prob": _float(0.0, 1.0, help="conditioning dropout (classifier-free guidance)"),
    "objective": _choice("ddpm", "rflow", help="generators: DDPM or rectified flow"),
    "prediction_type": _choice("epsilon", "v_prediction", "sample", help="generators: DDPM prediction type"),
    "min_snr_gamma": _float(0.0, 1000.0, nullable=True, help="generators: min-SNR loss weighting (DDPM)"),
    # SegGuidedDiff
    "ablation_mode": _choice("sample", "batch", help="random mask ablation per sample or per batch"),
    "ablation_prob": _float(0.0, 1.0, help="probability of dropping a class"),
    "ablation_apply_prob": _float(0.0, 1.0, help="probability of ablating a mask at all"),
    # Siamese-Diffusion
    "mask_weight": _float(0.0, 100.0, help="Siamese: weight of the mask loss"),
    "image_weight": _float(0.0, 100.0, help="Siamese: weight of the image loss"),
    "nc_weight": _float(0.0, 100.0, help="Siamese: weight of the noise-consistency loss"),
    "oa_weight": _float(0.0, 100.0, help="Siamese: weight of the online-augmentation loss"),
    "oa_start": _float(0.0, 1.0, help="Siamese: fraction of training before online augmentation"),
    "oa_max_t": _int(0, 10000, help="Siamese: largest t of online augmentation"),
    "conditioning_scale": _float(0.0, 100.0, help="Siamese: ControlNet conditioning scale"),
    # MedDiff-FT
    "num_real_pairs": _int(1, 1_000_000, help="MedDiff-FT: real pairs fine-tuned on"),
    # segmentation
    "flip_prob": _float(0.0, 1.0, help="segmentation: flip probability"),
    "affine_prob": _float(0.0, 1.0, help="segmentation: affine augmentation probability"),
    "rotate_range": _float(0.0, 3.1416, help="segmentation: rotation range (radians)"),
    "scale_range": _float(0.0, 1.0, help="segmentation: scale range"),
    "synthetic_ratio": _float(0.0, 1.0, help="segmentation: share of synthetic pairs per batch"),
}

#: config keys of the segmentation bundle's ``inference.json`` a segmentation request may override
SEGMENTATION_OVERRIDES: dict[str, Param] = {
    "batch_size": _int(1, 256, help="slices predicted at once"),
    "amp": _bool(help="mixed precision"),
}

#: task kind -> the override keys a request of that kind may send
REQUEST_OVERRIDES: dict[str, dict[str, Param]] = {
    "synthesis": SAMPLING_OVERRIDES,  # /infer/synthesis and /scoring/generate_pairs
    "training": TRAINING_OVERRIDES,  # /train/<bundle>
    "segmentation": SEGMENTATION_OVERRIDES,  # /infer/segmentation
}

#: parameters of ``/infer/synthesis`` besides ``method``, ``device``, ``label`` and ``overrides``
SYNTHESIS_PARAMS: dict[str, Param] = {
    "samples": _int(1, 64, help="samples per label"),
    "seed": _int(0, SEED_MAX, help="base seed"),
    "slice_index": _int(-1, 1_000_000, help="3D: only this slice (-1: every slice with enough foreground)"),
    "fill": _choice(*FILL_CHOICES, help="value of voxels not synthesised"),
}

#: parameters of ``/scoring/generate_pairs`` besides ``generator``, ``device``, ``output_dir`` and ``overrides``
PAIRS_PARAMS: dict[str, Param] = {
    "num_pairs": _int(1, 1_000_000, help="pairs to write"),
    "seed": _int(0, SEED_MAX, help="base seed"),
}

#: MONAI Label's training parameters (``BundleTrainTask``) that reach the bundle config or the trainer
TRAINING_PARAMS: dict[str, Param] = {
    "max_epochs": _int(1, 1_000_000, help="epochs of epoch_length iterations"),
    "val_split": _float(-1.0, 0.99, help="validation share of the labelled images (-1: none)"),
    "pretrained": _bool(help="(not used: the bundles resume from their own checkpoints)"),
    "multi_gpu": _bool(help="use every GPU"),
    "force_multi_gpu": _bool(help="multi-GPU even on one GPU"),
    "run_id": _choice("", "run", "training", help="bundle workflow id"),
    "tracking": _choice("", "None", "none", "mlflow", nullable=True, help="experiment tracking"),
}

_DEVICE = re.compile(r"cpu|cuda(:\d{1,2})?")
_GPUS = re.compile(r"all|\d{1,2}(,\d{1,2}){0,31}")
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _.:-]{0,63}")


def check_plain(name: str, value: Any, _depth: int = 0) -> None:
    """Raise :class:`RequestError` naming ``name`` unless ``value`` is plain JSON data that MONAI's config parser
    leaves as it is: ``null``, booleans, finite numbers, short strings that do not start with ``$`` / ``@`` / ``%``
    and hold no ``#``, and (nested) lists of those. A JSON object is refused anywhere: it could carry ``_target_``."""
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise RequestError(f"{name}: {value} is not a finite number")
        return
    if isinstance(value, str):
        text = value.strip()
        if text.startswith(CODE_PREFIXES):
            raise RequestError(
                f"{name}: {_show(value)} is config code (strings starting with $, @ or % are evaluated or resolved "
                "by MONAI's config parser): a request sends plain JSON values"
            )
        if ID_SEPARATOR in text:
            raise RequestError(f"{name}: {_show(value)} holds a '#' config reference: a request sends plain values")
        if len(value) > MAX_STRING:
            raise RequestError(f"{name}: strings of a request are at most {MAX_STRING} characters")
        return
    if isinstance(value, (list, tuple)):
        if _depth >= 2:
            raise RequestError(f"{name}: lists nested deeper than 2 levels are not accepted")
        if len(value) > MAX_LIST:
            raise RequestError(f"{name}: lists of a request hold at most {MAX_LIST} items")
        for i, v in enumerate(value):
            check_plain(f"{name}[{i}]", v, _depth + 1)
        return
    if isinstance(value, Mapping):
        raise RequestError(
            f"{name}: a JSON object is not accepted (it could carry '_target_' and instantiate classes): "
            "send plain values"
        )
    raise RequestError(f"{name}: {type(value).__name__} is not plain JSON")


def check_params(request: Mapping[str, Any], spec: Mapping[str, Param]) -> dict[str, Any]:
    """Validate the parameters of ``request`` named in ``spec`` (absent ones are skipped); return them normalised."""
    out = {}
    for key, param in spec.items():
        if key in request and request[key] is not None:
            out[key] = param.check(key, request[key])
    return out


def check_choice(name: str, value: Any, choices: Iterable[str]) -> str:
    """``value`` (or the first item of an option list) must be one of ``choices`` (e.g. a served bundle)."""
    choices = list(choices)
    if isinstance(value, (list, tuple)) and value:
        value = value[0]
    if not isinstance(value, str) or value not in choices:
        raise RequestError(f"{name}: unknown {_show(value)}, expected one of {choices}")
    return value


def check_device(value: Any, name: str = "device") -> str:
    """A torch device name: ``cpu``, ``cuda`` or ``cuda:N``."""
    if isinstance(value, (list, tuple)) and value:
        value = value[0]
    check_plain(name, value)
    if not isinstance(value, str) or not _DEVICE.fullmatch(value.strip()):
        raise RequestError(f"{name}: expected 'cpu', 'cuda' or 'cuda:N', got {_show(value)}")
    return value.strip()


def check_gpus(value: Any, name: str = "gpus") -> str:
    """MONAI Label's ``gpus``: ``all`` or comma-separated GPU indices."""
    if not isinstance(value, str) or not _GPUS.fullmatch(value.strip()):
        raise RequestError(f"{name}: expected 'all' or comma-separated GPU indices, got {_show(value)}")
    return value.strip()


def check_name(name: str, value: Any) -> str:
    """A short plain name (experiment or run name): letters, digits, space, ``_ . : -``."""
    check_plain(name, value)
    if not isinstance(value, str) or not _PLAIN_NAME.fullmatch(value):
        raise RequestError(f"{name}: expected a short plain name (letters, digits, ' _.:-'), got {_show(value)}")
    return value


def parse_overrides(value: Any) -> dict[str, Any]:
    """The request's ``overrides`` as a dict: a JSON object, or a string holding one (a form field)."""
    if value is None or value == "" or value == {}:
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise RequestError(f"overrides: not valid JSON ({e.msg} at character {e.pos})") from None
    if not isinstance(value, Mapping):
        raise RequestError(f"overrides: must be a JSON object of config keys, got {_show(value)}")
    return dict(value)


def request_overrides(value: Any, kind: str) -> dict[str, Any]:
    """Validate the ``overrides`` of a request of task ``kind`` (a key of :data:`REQUEST_OVERRIDES`).

    Every key must be on the kind's allow-list and every value the plain JSON that key takes; nothing is parsed
    before this returns. Raises:
        RequestError: naming the first key refused (unknown key, ``$``/``@``/``%`` string, ``#`` reference, JSON
            object, wrong type or range).
    """
    allowed = REQUEST_OVERRIDES[kind]
    out = {}
    for key, v in parse_overrides(value).items():
        label = f"overrides[{key!r}]"
        if not isinstance(key, str) or key not in allowed:
            check_plain("overrides key", key)
            raise RequestError(
                f"{label}: {_show(key)} may not be overridden by a {kind} request; allowed keys: {sorted(allowed)}"
            )
        out[key] = allowed[key].check(label, v)
    return out


def check_inside(path: str | os.PathLike, roots: Iterable[str | os.PathLike], name: str) -> Path:
    """``path`` resolved (symlinks followed) must lie inside one of ``roots``; return it resolved."""
    resolved = Path(path).expanduser().resolve()
    for root in roots:
        r = Path(root).expanduser().resolve()
        if resolved == r or r in resolved.parents:
            return resolved
    raise RequestError(f"{name}: {str(path)!r} resolves to {resolved}, outside the folders this server may use")


def resolve_output_dir(requested: Any, root: str | os.PathLike, default: str) -> Path:
    """The folder a batch-generation request writes to, inside the server's output ``root`` (``--conf output_dir``).

    ``requested`` (the request's ``output_dir``; ``default`` when empty) is taken relative to ``root`` unless
    absolute; symlinks are followed. Anything that resolves outside ``root`` (``..``, an absolute path elsewhere,
    a symlink pointing out) raises :class:`RequestError` naming the path.
    """
    if requested in (None, ""):
        requested = default
    if isinstance(requested, (list, tuple)) and requested:
        requested = requested[0]
    if not isinstance(requested, str) or "\x00" in requested:
        raise RequestError(f"output_dir: expected a folder path, got {_show(requested)}")
    if len(requested) > 1024:
        raise RequestError("output_dir: path too long")
    base = Path(root).expanduser().resolve()
    path = Path(requested).expanduser()
    path = path if path.is_absolute() else base / path
    resolved = path.resolve()
    if not (resolved == base or base in resolved.parents):
        raise RequestError(
            f"output_dir: {requested!r} resolves to {resolved}, outside the server's output folder {base} "
            "(give a folder inside it, or a path relative to it)"
        )
    return resolved
