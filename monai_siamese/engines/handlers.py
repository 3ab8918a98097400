"""Ignite handlers the MONAI handler set lacks: gradient clipping, exact resume from the newest intact checkpoint
(with the random states), sample grids, weight export with the training settings, a progress bar with the loss."""

from __future__ import annotations

import logging
import os
import random
import re
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint
from monai.engines.utils import IterationEvents
from monai.handlers import from_engine
from torch import nn

from monai_siamese.data.visualize import grid, label_to_rgb, save_png, to_uint8
from monai_siamese.inferers.sampler import ConditionalSampler, seeded_noise
from monai_siamese.networks.weights import save_weights

__all__ = [
    "is_main_process",
    "find_latest_checkpoint",
    "list_checkpoints",
    "RNGState",
    "EMAScheduleState",
    "GradientClipHandler",
    "ResumeHandler",
    "SampleGridHandler",
    "ExportWeightsHandler",
    "ProgressBarHandler",
    "TerminateOnNanHandler",
]

logger = logging.getLogger(__name__)


def is_main_process() -> bool:
    """True outside distributed runs and on rank 0."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


_ITER_RE = re.compile(r"checkpoint_(?:iteration|epoch)=(\d+)\.pt$")


def list_checkpoints(ckpt_dir: str | os.PathLike, pattern: str = "*checkpoint_*=*.pt") -> list[str]:
    """The ``CheckpointSaver`` checkpoints of ``ckpt_dir``, newest (highest iteration) first."""
    folder = Path(ckpt_dir)
    if not folder.is_dir():
        return []
    found = []
    for p in folder.glob(pattern):
        m = _ITER_RE.search(p.name)
        if m:
            found.append((int(m.group(1)), str(p)))
    return [p for _, p in sorted(found, reverse=True)]


def find_latest_checkpoint(ckpt_dir: str | os.PathLike, pattern: str = "*checkpoint_*=*.pt") -> str | None:
    """The checkpoint written last by ``CheckpointSaver`` in ``ckpt_dir`` (highest iteration), or None."""
    found = list_checkpoints(ckpt_dir, pattern)
    return found[0] if found else None


def _np_state(state: tuple) -> dict:
    name, keys, pos, has_gauss, cached = state
    return {
        "name": name,
        "keys": torch.from_numpy(np.asarray(keys).astype(np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached": float(cached),
    }


def _np_restore(d: Mapping) -> tuple:
    return (d["name"], d["keys"].numpy().astype(np.uint32), d["pos"], d["has_gauss"], d["cached"])


class RNGState:
    """The random states of a training run, as an object for ``CheckpointSaver``'s ``save_dict`` (``state_dict`` /
    ``load_state_dict`` of plain tensors and numbers, loadable with ``torch.load(weights_only=True)``): Python's
    ``random``, NumPy's global generator, torch's CPU generator, every CUDA generator, and the ``R`` of the given
    MONAI ``Randomizable`` objects that run in the main process (e.g. a per-batch mask ablation).

    Saved with the weights at the checkpoint's iteration and restored when a run resumes from it, the noise and
    timesteps of every later iteration are those of a run that was never interrupted.

    Args:
        randomizables: objects with a NumPy ``RandomState`` ``R`` to save too.
    """

    def __init__(self, randomizables: Sequence[Any] = ()) -> None:
        self.randomizables = [r for r in randomizables if r is not None]

    def state_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "python": list(random.getstate()[1]),
            "python_version": int(random.getstate()[0]),
            "numpy": _np_state(np.random.get_state()),
            "torch": torch.get_rng_state(),
            "objects": [_np_state(r.R.get_state()) for r in self.randomizables],
        }
        if torch.cuda.is_available():
            out["cuda"] = torch.cuda.get_rng_state_all()
        return out

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        random.setstate((state["python_version"], tuple(state["python"]), None))
        np.random.set_state(_np_restore(state["numpy"]))
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
        for r, s in zip(self.randomizables, state.get("objects", [])):
            r.R.set_state(_np_restore(s))


class GradientClipHandler:
    """Clip the gradient norm between backward and optimizer step (``IterationEvents.BACKWARD_COMPLETED`` of
    MONAI trainers), unscaling first under AMP. The norm before clipping is kept in ``engine.state.grad_norm``.

    Args:
        max_norm: maximum total gradient norm.
        norm_type: norm type.
    """

    def __init__(self, max_norm: float = 1.0, norm_type: float = 2.0) -> None:
        self.max_norm = max_norm
        self.norm_type = norm_type

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(IterationEvents.BACKWARD_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        opt = engine.optimizer
        # per parameter as given (ContiguousAdamW's packed buffer would give a norm rounded differently)
        if hasattr(opt, "user_parameters"):
            source = opt.user_parameters()
        else:
            source = [p for g in opt.param_groups for p in g["params"]]
        params = [p for p in source if p.grad is not None]
        if not params:
            return
        scaler = getattr(engine, "scaler", None)
        if getattr(engine, "amp", False) and scaler is not None:
            scaler.unscale_(engine.optimizer)
        if params[0].device.type != "cpu":
            # one fused call without reading the norm back to the host (no device synchronisation)
            engine.state.grad_norm = torch.nn.utils.clip_grad_norm_(params, self.max_norm, norm_type=self.norm_type)
            return
        # on the CPU reading the norm costs nothing: scale the gradients only when clipping changes them (the stock
        # call multiplies every gradient by min(1, max_norm / (norm + 1e-6)) on every step; the result is the same)
        grads = [p.grad for p in params]
        norm = torch.nn.utils.get_total_norm(grads, norm_type=self.norm_type, foreach=True)
        if float(norm) + 1e-6 > self.max_norm:
            flat = opt.packed_gradients() if hasattr(opt, "packed_gradients") else None
            if flat:  # ContiguousAdamW: the stock call's coefficient, one multiplication per buffer (same products)
                torch._foreach_mul_(flat, torch.clamp(float(self.max_norm) / (norm + 1e-6), max=1.0))
            else:
                torch.nn.utils.clip_grads_with_norm_(params, self.max_norm, norm, foreach=True)
        engine.state.grad_norm = norm


class EMAScheduleState:
    """The position of ignite ``EMAHandler``'s momentum warm-up, as an object for ``CheckpointSaver``'s ``save_dict``:
    the warm-up counts its own events (not the engine's iteration), so without it a resumed run would restart the
    warm-up and its EMA weights would drift from an uninterrupted run's.

    Args:
        ema: the ``EMAHandler`` (attached to the trainer before a checkpoint is saved or loaded).
    """

    def __init__(self, ema: Any) -> None:
        self.ema = ema

    def state_dict(self) -> dict[str, int]:
        scheduler = getattr(self.ema, "momentum_scheduler", None)
        return {"event_index": int(scheduler.event_index) if scheduler is not None else 0}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        scheduler = getattr(self.ema, "momentum_scheduler", None)
        if scheduler is not None:
            scheduler.event_index = int(state["event_index"])


class ResumeHandler:
    """Resume from the newest intact ``CheckpointSaver`` checkpoint in ``ckpt_dir``: networks, EMA, optimizer, LR
    scheduler, the trainer's iteration, the random states (:class:`RNGState`) and the data position (the batch
    sampler continues at the trainer's iteration), so the resumed run ends bit-identical to an uninterrupted one on
    the same device.

    A checkpoint that cannot be read (truncated by a kill, corrupt) is skipped with a warning naming it, and the next
    older one is used; with none intact, training starts from scratch.

    Args:
        ckpt_dir: checkpoint folder.
        load_dict: objects to restore, as given to ``CheckpointSaver`` (entries the checkpoint lacks, e.g. the
            random states of a checkpoint from an older version, are skipped with a warning).
        map_location: device mapping for ``torch.load``.
        enabled: set False to start from scratch even if checkpoints exist.
        batch_sampler: a :class:`~monai_siamese.data.ResumableBatchSampler` to move to the resumed iteration.
    """

    def __init__(
        self,
        ckpt_dir: str | os.PathLike,
        load_dict: Mapping[str, Any],
        map_location: Any = None,
        enabled: bool = True,
        batch_sampler: Any = None,
    ) -> None:
        self.ckpt_dir = ckpt_dir
        self.load_dict = dict(load_dict)
        self.map_location = map_location
        self.enabled = enabled
        self.batch_sampler = batch_sampler
        self.loaded_from: str | None = None
        self.skipped: list[str] = []
        self._checkpoint: Mapping[str, Any] | None = None

    def attach(self, engine: Engine) -> None:
        if not self.enabled:
            return
        for path in list_checkpoints(self.ckpt_dir):
            try:
                checkpoint = torch.load(path, map_location=self.map_location, weights_only=True)
            except Exception as e:  # noqa: BLE001 - any unreadable file is skipped, never fatal
                reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
                logger.warning(f"{path}: unreadable checkpoint, skipped ({type(e).__name__}: {reason})")
                warnings.warn(f"{path}: unreadable checkpoint, skipped ({reason})", RuntimeWarning, stacklevel=2)
                self.skipped.append(path)
                continue
            if not isinstance(checkpoint, Mapping) or "trainer" not in checkpoint:
                logger.warning(f"{path}: not a training checkpoint (no trainer state), skipped")
                self.skipped.append(path)
                continue
            self._checkpoint, self.loaded_from = checkpoint, path
            logger.info(f"resuming from {path}")
            engine.add_event_handler(Events.STARTED, self._load)
            return
        if self.skipped:
            logger.warning(f"no intact checkpoint in {self.ckpt_dir}: training starts from scratch")

    def _load(self, engine: Engine) -> None:
        checkpoint = self._checkpoint
        if checkpoint is None:
            return
        to_load = {k: v for k, v in self.load_dict.items() if k in checkpoint}
        missing = sorted(set(self.load_dict) - set(to_load))
        if missing:
            logger.warning(f"{self.loaded_from}: has no {missing}; those start fresh (the resume is not exact)")
        Checkpoint.load_objects(to_load=to_load, checkpoint=dict(checkpoint))
        self._checkpoint = None
        if self.batch_sampler is not None:
            self.batch_sampler.set_position(engine.state.iteration)


class SampleGridHandler:
    """Every ``interval`` iterations (and at the end), sample from fixed masks and save a PNG grid with one row
    per mask: ``mask | sample | real image``.

    Args:
        dataset: items with ``cond``, ``label`` and ``image`` (e.g. the validation dataset).
        denoiser: ``eps = denoiser(x_t, t, cond)``, typically wrapping the EMA model.
        sampler: the sampler (a DDIM sampler with few steps is enough for monitoring).
        output_dir: folder of the PNGs (``iter_XXXXXXX.png`` and ``latest.png``).
        interval: iterations between grids (0: only at the end).
        num_masks: rows in the grid.
        seed: noise seed (fixed, so grids are comparable over training).
        image_channels: channels of generated images.
        summary_writer: optional TensorBoard ``SummaryWriter`` to log the grid to.
        condition_fn: builds the condition batch from items (default: stack ``cond``).
    """

    def __init__(
        self,
        dataset: Sequence[Mapping],
        denoiser: nn.Module | Callable,
        sampler: ConditionalSampler,
        output_dir: str | os.PathLike,
        interval: int = 500,
        num_masks: int = 4,
        seed: int = 0,
        image_channels: int = 1,
        summary_writer: Any = None,
        condition_fn: Callable[[Sequence[Mapping]], torch.Tensor] | None = None,
    ) -> None:
        self.dataset = dataset
        self.denoiser = denoiser
        self.sampler = sampler
        self.output_dir = Path(output_dir)
        self.interval = interval
        n = min(num_masks, len(dataset))
        self.indices = [round(i * (len(dataset) - 1) / max(n - 1, 1)) for i in range(n)] if n > 1 else [0]
        self.seed = seed
        self.image_channels = image_channels
        self.summary_writer = summary_writer
        self.condition_fn = condition_fn
        self.last_path: str | None = None

    def attach(self, engine: Engine) -> None:
        if not is_main_process():
            return
        if self.interval > 0:
            engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.interval), self)
        engine.add_event_handler(Events.COMPLETED, self)

    @torch.no_grad()
    def make_grid(self, device: torch.device | str) -> torch.Tensor:
        items = [self.dataset[i] for i in self.indices]
        if self.condition_fn is not None:
            cond = self.condition_fn(items).to(device)
        else:
            cond = torch.stack([torch.as_tensor(it["cond"]).float() for it in items]).to(device)
        noise = seeded_noise((self.image_channels, *cond.shape[2:]), [self.seed + i for i in self.indices], device)
        was_training = isinstance(self.denoiser, nn.Module) and self.denoiser.training
        if isinstance(self.denoiser, nn.Module):
            self.denoiser.eval()
        samples = self.sampler(self.denoiser, cond, noise)
        if was_training:
            self.denoiser.train()
        rows = []
        for it, s in zip(items, samples):
            row = [label_to_rgb(it["label"]), to_uint8(s)]
            if it.get("image") is not None:
                row.append(to_uint8(it["image"]))
            rows.append(row)
        return grid(rows)

    def __call__(self, engine: Engine) -> None:
        device = engine.state.device if hasattr(engine.state, "device") else getattr(engine, "device", "cpu")
        devices = [torch.device(device).index or 0] if torch.device(device).type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # the grid never changes the training run's random stream
            image = self.make_grid(device)
        it = engine.state.iteration
        self.last_path = save_png(image, self.output_dir / f"iter_{it:07d}.png")
        save_png(image, self.output_dir / "latest.png")
        if self.summary_writer is not None:
            self.summary_writer.add_image("samples", image, it, dataformats="HWC")
        logger.info(f"sample grid: {self.last_path}")


class ExportWeightsHandler:
    """Write a module's weights (typically the EMA model) at the end of training (and optionally every
    ``interval`` iterations), atomically, as ``.safetensors`` or ``.pt`` by extension; ``settings`` (the bundle's
    ``trained_with``: network definition, objective, prediction type, noise schedule, classes, mask encoding, preset,
    spatial size) go into the safetensors metadata, so sampling can check that it uses the same settings
    (:func:`~monai_siamese.networks.load_weights` with ``expected``).

    Args:
        module: the module to export.
        path: output path.
        interval: also export every ``interval`` iterations (0: only at the end).
        settings: JSON-able training settings stored with the weights (safetensors only).
    """

    def __init__(
        self, module: nn.Module, path: str | os.PathLike, interval: int = 0, settings: Mapping[str, Any] | None = None
    ) -> None:
        self.module = module
        self.path = path
        self.interval = interval
        self.settings = dict(settings) if settings is not None else None

    def attach(self, engine: Engine) -> None:
        if not is_main_process():
            return
        if self.interval > 0:
            engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.interval), self)
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        save_weights(self.module, self.path, settings=self.settings)
        logger.info(f"exported weights to {self.path}")


class ProgressBarHandler:
    """ignite's tqdm ``ProgressBar`` showing the loss (MONAI calls ``attach(engine)`` only, so the output transform
    is given here). Shown only on an interactive terminal unless ``always``: redirected logs keep the
    ``StatsHandler`` lines instead of thousands of bar redraws.

    Args:
        loss_key: key of the loss in the engine output.
        persist: keep the bar after each epoch.
        always: attach even when stderr is not a terminal.
    """

    def __init__(self, loss_key: str = "loss", persist: bool = False, always: bool = False) -> None:
        from ignite.handlers import ProgressBar

        self.bar = ProgressBar(persist=persist)
        self.loss_key = loss_key
        self.always = always

    def attach(self, engine: Engine) -> None:
        if not is_main_process() or not (self.always or sys.stderr.isatty()):
            return
        self.bar.attach(
            engine, output_transform=lambda out: {self.loss_key: from_engine([self.loss_key], first=True)(out)[0]}
        )


class TerminateOnNanHandler:
    """ignite's ``TerminateOnNan`` on the loss, attachable from a MONAI handler list (it lacks ``attach``).

    The check reads the loss back to the host (a device sync), so on a GPU check every ``interval`` iterations (the
    bundles use their ``log_interval``) rather than every step.

    Args:
        loss_key: key of the loss in the engine output.
        interval: check every ``interval`` iterations.
    """

    def __init__(self, loss_key: str = "loss", interval: int = 1) -> None:
        from ignite.handlers import TerminateOnNan

        self.handler = TerminateOnNan(output_transform=lambda out: from_engine([loss_key], first=True)(out)[0])
        self.interval = max(int(interval), 1)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.interval), self.handler)
