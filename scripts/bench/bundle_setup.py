"""What the benchmarks time, built from the bundle configs (no re-declared networks): the parsed config of a bundle
with benchmark overrides, its ``train#trainer`` run in blocks of iterations, and a plain training loop over the same
network, optimizer settings and batch.

    parser = bundle_parser("seg_guided_diffusion", size=32, batch=8, work_dir="/tmp/x")
    ours = TrainerBlocks(parser.get_parsed_content("train#trainer"), iterations=10)
    plain = PlainLoop(bundle_parser(...), iterations=10)
    interleave({"bundle": ours, "plain": plain})
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from bench.timing import Block, timed, timed_steps

__all__ = [
    "NETWORK_KEY",
    "TRAIN_CONFIGS",
    "bundle_parser",
    "network_overrides",
    "first_batch",
    "TrainerBlocks",
    "PlainLoop",
]

#: configs of a bundle's CPU demo training (``common.json`` is prepended by ``read_config``)
TRAIN_CONFIGS = ("train.json", "demo.json")
#: id of the denoising UNet definition per method (size overrides go there)
NETWORK_KEY = {"seg_guided_diffusion": "network_def", "siamese_diffusion": "unet_def", "meddiff_ft": "network_def"}


def network_overrides(method: str, channels: Sequence[int] | None = None, **arch: Any) -> dict[str, Any]:
    """Overrides of a method's UNet definition: ``channels`` (attention off except where ``attention_levels`` says)
    and other ``DiffusionModelUNet`` arguments (``num_res_blocks``, ``norm_num_groups``, ``num_head_channels``)."""
    key = NETWORK_KEY[method]
    out: dict[str, Any] = {}
    if channels is not None:
        out[f"{key}#channels"] = list(channels)
        out[f"{key}#attention_levels"] = list(arch.pop("attention_levels", [False] * len(channels)))
    for k, v in arch.items():
        out[f"{key}#{k}"] = v
    return out


def bundle_parser(
    method: str,
    configs: Sequence[str] = TRAIN_CONFIGS,
    overrides: Mapping[str, Any] | None = None,
    work_dir: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    size: int | None = None,
    batch: int | None = None,
) -> Any:
    """The parsed config (a ``monai.bundle.ConfigParser``) of a bundle for a benchmark: ``configs`` over
    ``common.json``, the demo data, outputs under ``work_dir``, no resume, and ``overrides``.

    A MedDiff-FT network starts from random weights (``network`` is overridden: no pretrained file is needed to
    time it). ``initialize`` (the seed) is run.

    Args:
        method: bundle name.
        configs: config files of the bundle.
        overrides: further overrides (applied last).
        work_dir: folder of checkpoints, logs and sample grids (default: a temporary folder).
        device: device.
        size: ``spatial_size`` (square).
        batch: ``batch_size``.
    """
    import tempfile

    from monai_siamese.bundles import bundle_path, folder_overrides, read_config
    from monai_siamese.data import ensure_demo_data

    work = Path(work_dir) if work_dir is not None else Path(tempfile.mkdtemp(prefix=f"bench_{method}_"))
    over: dict[str, Any] = {
        "dataset_dir": ensure_demo_data(),
        "bundle_root": str(bundle_path(method)),
        "device": f"$torch.device('{torch.device(device)}')",
        "resume": False,
        **folder_overrides(work),
    }
    if size is not None:
        over["spatial_size"] = [int(size), int(size)]
    if batch is not None:
        over["batch_size"] = int(batch)
    if method == "meddiff_ft" and "train.json" in configs:
        over["network"] = "$@network_def.to(@device)"
    over.update(dict(overrides or {}))
    parser = read_config(method, list(configs), over)
    parser.get_parsed_content("initialize")
    return parser


def first_batch(parser: Any, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The first training batch of a bundle's data loader, as plain tensors on ``device``."""
    batch = next(iter(parser.get_parsed_content("train#dataloader")))
    out = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor):
            out[k] = (v.as_tensor() if hasattr(v, "as_tensor") else v).to(device)
    return out


class TrainerBlocks:
    """Run an ignite trainer ``iterations`` iterations at a time (``Engine.interrupt`` and resume): each call is one
    timed :class:`Block` of everything the trainer does per iteration (data loading, per-item transforms,
    collation, prepare-batch, step, every handler; with a prefetching loader, the block ends when the batches built
    ahead are done).

    Args:
        trainer: the bundle's ``train#trainer`` (with its ``max_epochs``/``epoch_length`` covering every block).
        iterations: iterations per block.
        attach: objects with ``attach(trainer)`` attached first (what the bundle's ``run`` attaches: the resume
            handler, the checkpoint saver).
    """

    def __init__(self, trainer: Any, iterations: int, attach: Sequence[Any] = ()) -> None:
        from ignite.engine import Events

        self.trainer = trainer
        self.iterations = int(iterations)
        for obj in attach:
            obj.attach(trainer)
        trainer.add_event_handler(Events.ITERATION_COMPLETED(every=self.iterations), lambda e: e.interrupt())
        loader = trainer.data_loader
        sampler = getattr(loader, "batch_sampler", None)
        self.batch_size = int(getattr(sampler, "batch_size", None) or getattr(loader, "batch_size", 1))
        self.device = getattr(trainer.state, "device", None) or "cpu"

    def __call__(self) -> Block:
        start = self.trainer.state.iteration

        def run() -> int:
            self.trainer.run()
            # a prefetching loader (PrefetchDataLoader) may still be building the next batch: wait for it, so that
            # work is timed (wall and CPU clock) to this block and not to the variant timed next
            wait = getattr(getattr(self.trainer, "_dataloader_iter", None), "wait_idle", None)
            if wait is not None:
                wait()
            return (self.trainer.state.iteration - start) * self.batch_size

        return timed(run, self.device)

    def close(self) -> None:
        """End the interrupted run without its ``COMPLETED`` handlers (no sample grid, no weight export)."""
        import logging

        gen = getattr(self.trainer, "_internal_run_generator", None)
        if gen is None:
            return
        logging.disable(logging.CRITICAL)  # ignite and the stats handlers log the GeneratorExit as an error
        try:
            gen.close()
        except BaseException:  # noqa: BLE001 - ignite re-raises GeneratorExit through its exception handlers
            pass
        finally:
            logging.disable(logging.NOTSET)
            self.trainer._internal_run_generator = None


class PlainLoop:
    """A plain training loop over a bundle's own network: the same network definition and initial weights, the same
    AdamW settings, one fixed batch of the bundle's data, and per step only noise, timesteps, the noisy input, the
    network, the MSE on the target, backward and the optimizer step (no handlers, no EMA, no clipping, no data
    pipeline): the floor any training engine is measured against.

    For Siamese-Diffusion the step is the network's training forward (both branches; online augmentation as the
    trainer's inferer has it) and :class:`~monai_siamese.engines.SiameseDiffusionLoss`.

    Args:
        parser: a parsed bundle config (:func:`bundle_parser`; a separate one from the trainer's, so the network is
            a separate copy with the same initial weights).
        iterations: steps per block.
        method: the bundle.
        image_weight: Siamese-Diffusion ``w_i``.
        oa_active: Siamese-Diffusion online augmentation on.
        default_adamw: use ``torch.optim.AdamW``'s default implementation (single-tensor on the CPU) instead of the
            bundle's (``foreach``/``fused`` as its config says): what a hand-written loop gets.
        same_algorithm: also do what the bundle's training algorithm does besides the step, written as a lean
            hand-written loop would: gradient-norm clipping (``torch.nn.utils.clip_grad_norm_``, ``grad_clip``), the
            LR schedule (the bundle's ``lr_scheduler`` class and settings) and the EMA of the weights (one
            ``torch._foreach_lerp_`` with the bundle's momentum). The difference to the bundle is then the engine
            alone (data pipeline, prepare-batch, handlers' dispatch).
        compile: ``torch.compile`` the network with the bundle's ``compile_kwargs`` (the loop of a user who compiles by
            hand).
    """

    def __init__(
        self,
        parser: Any,
        iterations: int,
        method: str,
        image_weight: float = 0.5,
        oa_active: bool = False,
        default_adamw: bool = False,
        same_algorithm: bool = False,
        compile: bool = False,
    ) -> None:
        from monai_siamese.diffusion import is_flow

        self.device = parser.get_parsed_content("device")
        self.method = method
        self.iterations = int(iterations)
        self.network = parser.get_parsed_content("network")
        self.network.train()
        params = [p for p in self.network.parameters() if p.requires_grad]
        self.forward = self.network
        if compile:  # with the bundle's own torch.compile arguments
            self.forward = torch.compile(self.network, **parser.get_parsed_content("compile_kwargs"))
        kwargs = {"lr": parser.get_parsed_content("lr"), "weight_decay": parser.get_parsed_content("weight_decay")}
        if not default_adamw:
            kwargs["fused"] = parser.get_parsed_content("optimizer#fused")
            if "optimizer#foreach" in parser:
                kwargs["foreach"] = parser.get_parsed_content("optimizer#foreach")
        self.optimizer = torch.optim.AdamW(params, **kwargs)
        self.same_algorithm = same_algorithm
        if same_algorithm:
            self.params = params
            self.grad_clip = parser.get_parsed_content("grad_clip")
            from monai.optimizers import WarmupCosineSchedule  # every generator bundle's schedule

            self.lr_scheduler = WarmupCosineSchedule(
                self.optimizer,
                warmup_steps=parser.get_parsed_content("warmup_steps"),
                t_total=parser.get_parsed_content("num_iterations"),
            )
            self.ema = [p.detach().clone() for p in params]
            self.ema_momentum = float(parser.get_parsed_content("ema_momentum"))
        self.scheduler = parser.get_parsed_content("noise_scheduler")
        self.flow = is_flow(self.scheduler)
        self.prediction = parser.get_parsed_content("prediction")
        self.num_train_timesteps = parser.get_parsed_content("num_train_timesteps")
        self.batch = first_batch(parser, self.device)
        self.batch_size = int(self.batch["image"].shape[0])
        self.image_weight = image_weight
        self.oa_active = oa_active
        self.oa_max_t = parser.get_parsed_content("oa_max_t") if method == "siamese_diffusion" else 200
        if method == "siamese_diffusion":
            self.loss = parser.get_parsed_content("train#loss")

    def step(self) -> torch.Tensor:
        from monai_siamese.diffusion import diffusion_target

        x0, cond = self.batch["image"], self.batch["cond"]
        noise = torch.randn_like(x0)
        if self.flow:
            t = self.scheduler.sample_timesteps(x0)
        else:
            t = torch.randint(0, self.num_train_timesteps, (x0.shape[0],), device=x0.device).long()
        target = diffusion_target(self.scheduler, x0, noise, t, self.prediction)
        self.optimizer.zero_grad(set_to_none=True)
        if self.method == "siamese_diffusion":
            from monai_siamese.inferers.siamese import make_image_hint

            hint = make_image_hint(x0, cond.shape[1])
            oa = (t <= self.oa_max_t) if self.oa_active else None
            out = self.forward(x0, noise, t, cond, hint, self.image_weight, oa)
            loss = self.loss(out, target)
        else:
            x_t = self.scheduler.add_noise(original_samples=x0, noise=noise, timesteps=t)
            pred = self.forward(torch.cat([x_t, cond], 1), timesteps=t)
            loss = F.mse_loss(pred.float(), target.float())
        loss.backward()
        if self.same_algorithm and self.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self.optimizer.step()
        if self.same_algorithm:
            self.lr_scheduler.step()
            with torch.no_grad():
                torch._foreach_lerp_(self.ema, self.params, self.ema_momentum)
        return loss

    def __call__(self) -> Block:
        return timed_steps(self.step, self.iterations, self.batch_size, self.device)
