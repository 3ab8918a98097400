"""Ignite handlers the MONAI handler set lacks: gradient clipping, resume-from-latest, sample grids, weight
export, a progress bar with the loss."""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from ignite.engine import Engine, Events
from monai.engines.utils import IterationEvents
from monai.handlers import CheckpointLoader, from_engine
from torch import nn

from monai_siamese.data.visualize import grid, label_to_rgb, save_png, to_uint8
from monai_siamese.inferers.sampler import ConditionalSampler, seeded_noise
from monai_siamese.networks.weights import save_weights

__all__ = [
    "is_main_process",
    "find_latest_checkpoint",
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


def find_latest_checkpoint(ckpt_dir: str | os.PathLike, pattern: str = "*checkpoint_*=*.pt") -> str | None:
    """The checkpoint written last by ``CheckpointSaver`` in ``ckpt_dir`` (highest iteration), or None."""
    folder = Path(ckpt_dir)
    if not folder.is_dir():
        return None
    best, best_it = None, -1
    for p in folder.glob(pattern):
        m = _ITER_RE.search(p.name)
        if m and int(m.group(1)) > best_it:
            best, best_it = p, int(m.group(1))
    return str(best) if best is not None else None


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
        params = [p for g in engine.optimizer.param_groups for p in g["params"] if p.grad is not None]
        if not params:
            return
        scaler = getattr(engine, "scaler", None)
        if getattr(engine, "amp", False) and scaler is not None:
            scaler.unscale_(engine.optimizer)
        norm = torch.nn.utils.clip_grad_norm_(params, self.max_norm, norm_type=self.norm_type)
        engine.state.grad_norm = norm


class ResumeHandler:
    """Resume from the latest ``CheckpointSaver`` checkpoint in ``ckpt_dir`` when one exists (networks, EMA,
    optimizer, LR scheduler and the trainer's iteration), through MONAI's ``CheckpointLoader``.

    Args:
        ckpt_dir: checkpoint folder.
        load_dict: objects to restore, as given to ``CheckpointSaver``.
        map_location: device mapping for ``torch.load``.
        enabled: set False to start from scratch even if checkpoints exist.
    """

    def __init__(
        self,
        ckpt_dir: str | os.PathLike,
        load_dict: Mapping[str, Any],
        map_location: Any = None,
        enabled: bool = True,
    ) -> None:
        self.ckpt_dir = ckpt_dir
        self.load_dict = dict(load_dict)
        self.map_location = map_location
        self.enabled = enabled
        self.loaded_from: str | None = None

    def attach(self, engine: Engine) -> None:
        if not self.enabled:
            return
        latest = find_latest_checkpoint(self.ckpt_dir)
        if latest is None:
            return
        logger.info(f"resuming from {latest}")
        self.loaded_from = latest
        CheckpointLoader(load_path=latest, load_dict=self.load_dict, map_location=self.map_location).attach(engine)


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
        image = self.make_grid(device)
        it = engine.state.iteration
        self.last_path = save_png(image, self.output_dir / f"iter_{it:07d}.png")
        save_png(image, self.output_dir / "latest.png")
        if self.summary_writer is not None:
            self.summary_writer.add_image("samples", image, it, dataformats="HWC")
        logger.info(f"sample grid: {self.last_path}")


class ExportWeightsHandler:
    """Write a module's weights (typically the EMA model) at the end of training (and optionally every
    ``interval`` iterations), atomically, as ``.safetensors`` or ``.pt`` by extension.

    Args:
        module: the module to export.
        path: output path.
        interval: also export every ``interval`` iterations (0: only at the end).
    """

    def __init__(self, module: nn.Module, path: str | os.PathLike, interval: int = 0) -> None:
        self.module = module
        self.path = path
        self.interval = interval

    def attach(self, engine: Engine) -> None:
        if not is_main_process():
            return
        if self.interval > 0:
            engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.interval), self)
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        save_weights(self.module, self.path)
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
