"""Speed of training and sampling for the three methods, each against the reference way, measured in the same run.

For each method (``seg_guided_diffusion``, ``siamese_diffusion``, ``meddiff_ft``):

- training throughput (images/s): ours = the package's training step as the bundle runs it (MONAI
  ``SupervisedTrainer`` / ``SiameseDiffusionTrainer`` step with ``ConditionalDiffusionPrepareBatch``, bf16 autocast
  on CUDA without a gradient scaler, fused AdamW on CUDA, optionally ``channels_last`` and ``torch.compile``);
  reference = the reference projects' loop: diffusers ``UNet2DModel`` with the reference channels, fp32, plain loop,
  DDPM noise + MSE, AdamW, grad clip, ``loss.item()`` per step (mazurowski-lab/segmentation-guided-diffusion; the
  MedDiff-FT reference is the same loop with the inpainting channels); for Siamese-Diffusion the deep-copying step of
  ``scripts/benchmark_siamese_step.py``;
- sampling throughput (images/s): ours = ``ConditionalSampler`` with DDIM 50/25/10 and DPM-Solver++ (2M) 20/10, many
  masks per batch, bf16 on CUDA; reference = fp32 DDIM 50 (diffusers ``DDIMScheduler`` + ``UNet2DModel``; MONAI
  ControlNet + UNet for Siamese-Diffusion);
- peak memory (CUDA ``max_memory_allocated``; on CPU the process's peak RSS, each variant in its own process),
  model FLOPs per step (``torch.utils.flop_counter.FlopCounterMode``) and, on CUDA, MFU against the device's dense
  bf16 peak;
- faithfulness Dice per sampler setting (segmentation-guided model): a segmenter (``--segmenter`` or a quick one
  trained with the segmentation bundle on the demo data) segments the generated images; Dice against the masks.
  The generator is ``--generator`` (weights of the seg_guided bundle's demo architecture) or a quick one trained with
  the bundle's ``demo.json`` on the demo data. The speed-up "at equal quality" is the fastest setting whose Dice is
  within ``--dice_tolerance`` of DDIM 50.

Medians over repeated steps after warm-up (sampling: the median step time over all runs, times the steps; on a
shared machine a whole run's time picks up other processes' bursts). Writes ``benchmark_<device>_<time>.json`` and
``.md`` (ratios ours / reference) to ``--out``.

    python scripts/benchmark.py --quick --device cpu          # ~5 minutes on 2 cores
    python scripts/benchmark.py --device cuda --resolution 256 --batch 16
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

METHODS = ("seg_guided_diffusion", "siamese_diffusion", "meddiff_ft")
#: dense bf16 tensor-core peaks (TFLOPS), matched by substring of the device name, first match wins
BF16_PEAK_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100", 989.0),
    ("H200", 989.0),
    ("GH200", 989.0),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("A10G", 70.0),
    ("RTX 4090", 165.0),
)
#: (sampler, steps) settings of our sampler; the first is the quality baseline (the reference's sampler)
SAMPLER_SETTINGS = (("ddim", 50), ("ddim", 25), ("ddim", 10), ("dpmpp_2m", 20), ("dpmpp_2m", 10))
FULL = {
    "resolution": 256,
    "batch": 16,
    "channels": [128, 128, 256, 256, 512, 512],
    "attention": [False, False, False, False, True, False],
    "num_res_blocks": 2,
    "head_channels": 64,
    "norm_groups": 32,
    "hint_channels": [64],
    "steps": 20,
    "warmup": 5,
    "sample_batch": 16,
    "sample_repeats": 3,
    "quality_masks": 64,
}
QUICK = {
    "resolution": 32,
    "batch": 4,
    "channels": [16, 16, 32, 32, 64, 64],
    "attention": [False, False, False, False, True, False],
    "num_res_blocks": 1,
    "head_channels": 32,
    "norm_groups": 16,
    "hint_channels": [16],
    "steps": 8,
    "warmup": 4,
    "sample_batch": 8,
    "sample_repeats": 2,
    "quality_masks": 24,
}
NUM_CLASSES = 4


# ----------------------------------------------------------------------------------------------------------- utils
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_memory(device: torch.device) -> dict[str, Any]:
    if device.type == "cuda":
        return {"peak_mib": torch.cuda.max_memory_allocated(device) / 2**20, "memory": "cuda max_memory_allocated"}
    return {"peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "memory": "process peak RSS"}


def _reset_memory(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device) / 2**20
    return _rss_mib()


def bf16_peak_tflops(device: torch.device) -> float | None:
    """Dense bf16 peak of a known GPU (None elsewhere)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, peak in BF16_PEAK_TFLOPS:
        if key in name:
            return peak
    return None


def count_flops(fn) -> int:
    """FLOPs of one call of ``fn`` (forward and backward if it runs them), by ``FlopCounterMode``."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return int(counter.get_total_flops())


def _autocast(cfg: dict, device: torch.device):
    enabled = cfg["amp"] and (device.type == "cuda" or cfg.get("cpu_bf16", False))
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def _cond_channels(method: str) -> int:
    """Channels concatenated to x_t: one-hot mask (seg_guided); one-hot mask + masked image (meddiff_ft)."""
    return NUM_CLASSES + (1 if method == "meddiff_ft" else 0)


def _batches(cfg: dict, method: str, n: int, batch: int) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(1234)
    res = cfg["resolution"]
    out = []
    for _ in range(n):
        labels = torch.randint(0, NUM_CLASSES, (batch, 1, max(res // 8, 1), max(res // 8, 1)), generator=g)
        labels = torch.nn.functional.interpolate(labels.float(), size=(res, res), mode="nearest").long()
        cond = torch.nn.functional.one_hot(labels[:, 0], NUM_CLASSES).movedim(-1, 1).float()
        image = torch.rand((batch, 1, res, res), generator=g) * 2 - 1
        if method == "meddiff_ft":
            cond = torch.cat([cond, image * (labels == 0).float()], 1)
        out.append({"image": image, "cond": cond, "label": labels})
    return out


# ------------------------------------------------------------------------------------------------------- networks
def our_unet(cfg: dict, method: str, device: torch.device) -> torch.nn.Module:
    """The bundles' ``DiffusionModelUNet`` (channels scaled by the preset)."""
    from monai.networks.nets import DiffusionModelUNet

    torch.manual_seed(0)
    return DiffusionModelUNet(
        spatial_dims=2,
        in_channels=1 + _cond_channels(method),
        out_channels=1,
        channels=tuple(cfg["channels"]),
        attention_levels=tuple(cfg["attention"]),
        num_res_blocks=cfg["num_res_blocks"],
        num_head_channels=cfg["head_channels"],
        norm_num_groups=cfg["norm_groups"],
        use_flash_attention=device.type == "cuda",
    ).to(device)


def reference_unet(cfg: dict, method: str, device: torch.device) -> torch.nn.Module:
    """diffusers ``UNet2DModel`` as the reference builds it: ``block_out_channels`` (128,128,256,256,512,512), two
    layers per block, attention in the fifth down block and the second up block (the preset's channels and
    attention levels, the same as our network's)."""
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    return UNet2DModel(
        sample_size=cfg["resolution"],
        in_channels=1 + _cond_channels(method),
        out_channels=1,
        layers_per_block=cfg["num_res_blocks"],
        block_out_channels=tuple(cfg["channels"]),
        norm_num_groups=cfg["norm_groups"],
        attention_head_dim=cfg["head_channels"],
        down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in cfg["attention"]),
        up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(cfg["attention"])),
    ).to(device)


def siamese_network(cfg: dict, device: torch.device) -> Any:
    from monai.networks.nets import ControlNet, DiffusionModelUNet
    from monai.networks.schedulers import DDPMScheduler

    from monai_siamese.networks import SiameseDiffusionNetwork

    torch.manual_seed(0)
    arch = {
        "spatial_dims": 2,
        "in_channels": 1,
        "channels": tuple(cfg["channels"]),
        "attention_levels": tuple(cfg["attention"]),
        "num_res_blocks": cfg["num_res_blocks"],
        "norm_num_groups": cfg["norm_groups"],
        "num_head_channels": cfg["head_channels"],
        "use_flash_attention": device.type == "cuda",
    }
    unet = DiffusionModelUNet(out_channels=1, **arch)
    cn = ControlNet(
        conditioning_embedding_in_channels=NUM_CLASSES,
        conditioning_embedding_num_channels=tuple(cfg["hint_channels"]),
        **arch,
    )
    net = SiameseDiffusionNetwork(unet, cn, scheduler=DDPMScheduler(1000), unet_mode="all")
    with torch.no_grad():  # a network in training: the zero convolutions are no longer zero
        for p in list(cn.parameters()) + list(unet.out.parameters()):
            p.add_(torch.randn_like(p) * 0.02)
    return net.to(device)


# ------------------------------------------------------------------------------------------------ training workers
def _ours_concat_trainer(cfg: dict, method: str, device: torch.device, batches: list) -> tuple[Any, torch.nn.Module]:
    """The seg_guided / meddiff bundles' trainer: SupervisedTrainer + ConditionalDiffusionPrepareBatch + inferer."""
    from monai.engines import SupervisedTrainer
    from monai.inferers import DiffusionInferer
    from monai.networks.schedulers import DDPMScheduler

    from monai_siamese.engines import (
        BF16NoScalerHandler,
        ConditionalDiffusionPrepareBatch,
        GradientClipHandler,
        compile_network,
        fused_adamw_available,
        to_channels_last,
    )

    net = to_channels_last(our_unet(cfg, method, device), cfg["channels_last"])
    sched = DDPMScheduler(1000)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, weight_decay=0.01, fused=fused_adamw_available(device))
    amp = cfg["amp"] and device.type == "cuda"
    trainer = SupervisedTrainer(
        device=device,
        max_epochs=1,
        epoch_length=len(batches),
        train_data_loader=batches,
        network=compile_network(net, cfg["compile"]),
        optimizer=opt,
        loss_function=torch.nn.MSELoss(),
        inferer=DiffusionInferer(sched),
        prepare_batch=ConditionalDiffusionPrepareBatch(1000, condition_name="cond", mode="concat"),
        train_handlers=[BF16NoScalerHandler(torch.bfloat16), GradientClipHandler(1.0)],
        amp=amp,
        amp_kwargs={"dtype": torch.bfloat16},
        decollate=False,
        optim_set_to_none=True,
    )
    return trainer, net


def _ours_siamese_trainer(cfg: dict, device: torch.device, batches: list, phase: float) -> tuple[Any, Any]:
    from monai_siamese.engines import (
        BF16NoScalerHandler,
        GradientClipHandler,
        SiameseDiffusionTrainer,
        compile_network,
        fused_adamw_available,
        to_channels_last,
    )

    net = to_channels_last(siamese_network(cfg, device), cfg["channels_last"])
    opt = torch.optim.AdamW(
        [p for p in net.parameters() if p.requires_grad], lr=1e-5, fused=fused_adamw_available(device)
    )
    total = 1000
    trainer = SiameseDiffusionTrainer(
        device=device,
        max_epochs=1,
        epoch_length=len(batches),
        train_data_loader=batches,
        network=compile_network(net, cfg["compile"]),
        optimizer=opt,
        max_steps=total,
        train_handlers=[BF16NoScalerHandler(torch.bfloat16), GradientClipHandler(1.0)],
        amp=cfg["amp"] and device.type == "cuda",
        amp_kwargs={"dtype": torch.bfloat16},
        optim_set_to_none=True,
    )
    # the phase of training: w_i = phase, online augmentation after a third of training
    trainer.global_step = lambda: int(phase * total)  # type: ignore[method-assign]
    return trainer, net


def _time_trainer(trainer: Any, device: torch.device, warmup: int) -> list[float]:
    from ignite.engine import Events

    times: list[float] = []
    start = [0.0]

    @trainer.on(Events.ITERATION_STARTED)
    def _t0(engine):
        _sync(device)
        start[0] = time.perf_counter()

    @trainer.on(Events.ITERATION_COMPLETED)
    def _t1(engine):
        _sync(device)
        if engine.state.iteration > warmup:
            times.append(time.perf_counter() - start[0])

    trainer.run()
    return times


def _reference_concat_loop(cfg: dict, method: str, device: torch.device, batches: list) -> tuple[list[float], Any]:
    """The reference's training loop (segmentation-guided-diffusion ``training.py``): fp32 diffusers UNet2DModel,
    DDPM noise, MSE on the noise, AdamW, grad clip 1.0, cosine LR with warm-up, ``loss.item()`` for the log."""
    import torch.nn.functional as F
    from diffusers import DDPMScheduler
    from diffusers.optimization import get_cosine_schedule_with_warmup

    model = reference_unet(cfg, method, device)
    sched = DDPMScheduler(num_train_timesteps=1000)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    lr_sched = get_cosine_schedule_with_warmup(opt, num_warmup_steps=500, num_training_steps=100000)
    times = []
    model.train()
    for i, b in enumerate(batches):
        _sync(device)
        t0 = time.perf_counter()
        clean, cond = b["image"].to(device), b["cond"].to(device)
        noise = torch.randn_like(clean)
        timesteps = torch.randint(0, 1000, (clean.shape[0],), device=device).long()
        noisy = sched.add_noise(clean, noise, timesteps)
        pred = model(torch.cat((noisy, cond), dim=1), timesteps, return_dict=False)[0]
        loss = F.mse_loss(pred, noise)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        lr_sched.step()
        opt.zero_grad()
        _ = loss.detach().item()  # the reference logs the loss every step
        _sync(device)
        if i >= cfg["warmup"]:
            times.append(time.perf_counter() - t0)
    return times, model


def train_worker(cfg: dict, method: str, variant: str) -> dict:
    device = torch.device(cfg["device"])
    n = cfg["warmup"] + cfg["steps"]
    batches = _batches(cfg, method, n, cfg["batch"])
    base = _reset_memory(device)
    res: dict[str, Any] = {"method": method, "variant": variant, "kind": "train", "batch": cfg["batch"]}
    if method == "siamese_diffusion":
        from benchmark_siamese_step import ours_forward, reference_forward

        from monai_siamese.engines.siamese import make_image_hint

        phase_times = {}
        for phase, w_i in (("early", 0.1), ("late", 0.5)):  # OA off / on
            if variant == "ours":
                trainer, net = _ours_siamese_trainer(cfg, device, batches, w_i)
                phase_times[phase] = _time_trainer(trainer, device, cfg["warmup"])
            else:
                net = siamese_network(cfg, device)
                opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-5)
                times = []
                for i, b in enumerate(batches):
                    _sync(device)
                    t0 = time.perf_counter()
                    images, cond = b["image"].to(device), b["cond"].to(device)
                    t = torch.randint(0, 1000, (images.shape[0],), device=device)
                    noise = torch.randn_like(images)
                    opt.zero_grad(set_to_none=True)
                    hint = make_image_hint(images, cond.shape[1])
                    loss = reference_forward(net, images, noise, t, cond, hint, w_i, w_i > 1 / 3)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
                    opt.step()
                    _ = loss.item()
                    _sync(device)
                    if i >= cfg["warmup"]:
                        times.append(time.perf_counter() - t0)
                phase_times[phase] = times
        f = 1 / 3  # fraction of training before online augmentation
        step_s = f * statistics.median(phase_times["early"]) + (1 - f) * statistics.median(phase_times["late"])
        res["times_s"] = {k: [round(x, 5) for x in v] for k, v in phase_times.items()}
        b = batches[0]
        images, cond = b["image"].to(device), b["cond"].to(device)
        t = torch.randint(0, 1000, (images.shape[0],), device=device)

        def step():
            hint = make_image_hint(images, cond.shape[1])
            with _autocast(cfg, device) if variant == "ours" else torch.autocast(device.type, enabled=False):
                fwd = ours_forward if variant == "ours" else reference_forward
                loss = fwd(net, images, torch.randn_like(images), t, cond, hint, 0.5, True)
            loss.backward()

        res["flops_per_step"] = count_flops(step)
    else:
        if variant == "ours":
            trainer, net = _ours_concat_trainer(cfg, method, device, batches)
            times = _time_trainer(trainer, device, cfg["warmup"])
        else:
            times, net = _reference_concat_loop(cfg, method, device, batches)
        step_s = statistics.median(times)
        res["times_s"] = [round(x, 5) for x in times]
        b = batches[0]
        x, cond = b["image"].to(device), b["cond"].to(device)
        t = torch.randint(0, 1000, (x.shape[0],), device=device)

        def step():
            with _autocast(cfg, device) if variant == "ours" else torch.autocast(device.type, enabled=False):
                out = net(torch.cat([x, cond], 1), t)
                out = out.sample if hasattr(out, "sample") else out
                loss = (out.float() - x).pow(2).mean()
            loss.backward()

        res["flops_per_step"] = count_flops(step)
    res["step_s"] = step_s
    res["images_per_s"] = cfg["batch"] / step_s
    res["base_mib"] = base
    res.update(_peak_memory(device))
    res["params"] = sum(p.numel() for p in net.parameters())
    return res


# ------------------------------------------------------------------------------------------------ sampling workers
class _Autocast(torch.nn.Module):
    """Denoiser under bf16 autocast (our sampling on CUDA); float32 output for the solver."""

    def __init__(self, denoiser: torch.nn.Module, cfg: dict, device: torch.device) -> None:
        super().__init__()
        self.denoiser, self.cfg, self.device = denoiser, cfg, device

    def forward(self, x, t, cond):
        with _autocast(self.cfg, self.device):
            return self.denoiser(x, t, cond).float()


def _our_denoiser(cfg: dict, method: str, device: torch.device) -> torch.nn.Module:
    from monai_siamese.engines import to_channels_last
    from monai_siamese.networks import ConcatConditionedUNet

    if method == "siamese_diffusion":
        den = siamese_network(cfg, device).denoiser()  # Mask-Diffusion only at sampling
    else:
        den = ConcatConditionedUNet(our_unet(cfg, method, device))
    return _Autocast(to_channels_last(den.eval(), cfg["channels_last"]), cfg, device)


class _StepClock:
    """Per-step wall times of a sampling run (a step hook / loop callback): robust medians on a shared machine."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.times, self.last = device, [], None

    def start(self) -> None:
        _sync(self.device)
        self.last = time.perf_counter()

    def tick(self, x=None, t=None, t_prev=None):
        _sync(self.device)
        now = time.perf_counter()
        self.times.append(now - self.last)
        self.last = now
        return x


def _time_sampling(run, device: torch.device, repeats: int, steps: int) -> dict[str, float]:
    """Median step time over ``repeats`` runs; a run's time is estimated as ``steps x`` the median step (whole runs
    are timed too, but on a shared machine a run's total picks up other processes' bursts)."""
    clock, totals = _StepClock(device), []
    for _ in range(repeats):
        clock.start()
        t0 = clock.last
        run(clock)
        totals.append(time.perf_counter() - t0)
    step = statistics.median(clock.times)
    return {"step_s": step, "s": step * steps, "run_s_median": statistics.median(totals), "steps": steps}


def sample_worker(cfg: dict, method: str, variant: str) -> dict:
    from monai_siamese.diffusion import make_scheduler
    from monai_siamese.inferers import ConditionalSampler, seeded_noise

    device = torch.device(cfg["device"])
    bs = cfg["sample_batch"]
    b = _batches(cfg, method, 1, bs)[0]
    cond = b["cond"].to(device)
    noise = seeded_noise((1, cfg["resolution"], cfg["resolution"]), list(range(bs)), device)
    res: dict[str, Any] = {"method": method, "variant": variant, "kind": "sample", "batch": bs, "settings": {}}
    base = _reset_memory(device)
    with torch.no_grad():
        if variant == "ours":
            den = _our_denoiser(cfg, method, device)
            ConditionalSampler(make_scheduler("ddim"), num_inference_steps=10)(den, cond, noise)  # warm-up
            for name, steps in SAMPLER_SETTINGS:
                sampler = ConditionalSampler(make_scheduler(name), num_inference_steps=steps)
                r = _time_sampling(
                    lambda clock: sampler(den, cond, noise, hooks=[clock.tick]), device, cfg["sample_repeats"], steps
                )
                res["settings"][f"{name}_{steps}"] = {**r, "images_per_s": bs / r["s"]}
            t = torch.full((bs,), 500, device=device, dtype=torch.long)
            res["flops_per_eval"] = count_flops(lambda: den(noise, t, cond))
        else:
            if method == "siamese_diffusion":
                from monai.networks.schedulers import DDIMScheduler

                net = siamese_network(cfg, device).eval()
                sched = DDIMScheduler(1000)

                def model(x, t):
                    ts = torch.full((x.shape[0],), int(t), device=device, dtype=torch.long)
                    down, mid = net.controlnet(x, ts, controlnet_cond=cond)
                    return net.unet(x, ts, down_block_additional_residuals=down, mid_block_additional_residual=mid)

                def run(clock):
                    sched.set_timesteps(50)
                    x = noise
                    for t in sched.timesteps:
                        x, _ = sched.step(model(x, t), int(t), x)
                        clock.tick()
                    return x

            else:
                from diffusers import DDIMScheduler

                unet = reference_unet(cfg, method, device).eval()
                sched = DDIMScheduler(num_train_timesteps=1000)

                def model(x, t):
                    return unet(torch.cat((x, cond), dim=1), t, return_dict=False)[0]

                def run(clock):  # the reference's evaluation loop (DDIM, 50 steps, fp32)
                    sched.set_timesteps(50)
                    x = noise
                    for t in sched.timesteps:
                        x = sched.step(model(x, t), t, x).prev_sample
                        clock.tick()
                    return x

            sched.set_timesteps(50)
            x = noise
            for t in list(sched.timesteps)[:10]:  # warm-up
                model(x, t)
            r = _time_sampling(run, device, cfg["sample_repeats"], 50)
            res["settings"]["ddim_50"] = {**r, "images_per_s": bs / r["s"]}
            res["flops_per_eval"] = count_flops(lambda: model(noise, torch.tensor(500, device=device)))
    res["base_mib"] = base
    res.update(_peak_memory(device))
    return res


# ------------------------------------------------------------------------------------------------- quality worker
def _quick_overrides(tmp: Path, demo_dir: str, size: int, iterations: int) -> dict:
    return {
        "dataset_dir": demo_dir,
        "ckpt_dir": str(tmp / "models"),
        "log_dir": str(tmp / "logs"),
        "sample_dir": str(tmp / "samples"),
        "spatial_size": [size, size],
        "num_iterations": iterations,
        "epoch_length": min(iterations, 100),
        "num_workers": 0,
        "checkpoint_interval": iterations,
        "resume": False,
    }


def quality_worker(cfg: dict) -> dict:
    """Faithfulness Dice of the segmentation-guided model for each sampler setting."""
    from monai.bundle import ConfigParser

    from monai_siamese.cli import run_bundle
    from monai_siamese.data.demo import ensure_demo_data
    from monai_siamese.diffusion import make_scheduler
    from monai_siamese.inferers import ConditionalSampler, seeded_noise
    from monai_siamese.networks import ConcatConditionedUNet, load_weights
    from monai_siamese.quality import load_segmenter
    from monai_siamese.quality.faithfulness import faithfulness_dice

    device = torch.device(cfg["device"])
    work = Path(cfg["work_dir"])
    demo_dir = ensure_demo_data()
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    res: dict[str, Any] = {"kind": "quality", "timings_s": {}}
    seg_bundle, gen_bundle = REPO / "bundles" / "segmentation", REPO / "bundles" / "seg_guided_diffusion"
    gen_size = cfg["quality_size"]
    t0 = time.perf_counter()
    if cfg.get("segmenter"):
        segmenter = load_segmenter(cfg["segmenter"], device=device)
        res["segmenter"] = cfg["segmenter"]
    else:
        seg_dir = work / "segmenter"
        over = _quick_overrides(seg_dir, demo_dir, 64, cfg["segmenter_iterations"])
        over.update({"network_def#channels": [16, 32, 64, 128], "val_interval": 1000})
        run_bundle(seg_bundle, ["train.json", "demo.json"], "training", "train", over)
        segmenter = load_segmenter(seg_bundle, configs=["train.json", "demo.json"], overrides=over, device=device)
        res["segmenter"] = f"quick: segmentation bundle demo.json, 64x64, {cfg['segmenter_iterations']} iterations"
    res["timings_s"]["segmenter"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    gen_over = _quick_overrides(work / "generator", demo_dir, gen_size, cfg["generator_iterations"])
    gen_over.update({"sample_interval": 0, "ema_warmup_iters": max(cfg["generator_iterations"] // 3, 1)})
    if cfg.get("generator"):
        weights = cfg["generator"]
        res["generator"] = weights
    else:
        run_bundle(gen_bundle, ["train.json", "demo.json"], "training", "train", gen_over)
        weights = str(work / "generator" / "models" / "model.safetensors")
        res["generator"] = (
            f"quick: seg_guided_diffusion demo.json, {gen_size}x{gen_size}, {cfg['generator_iterations']} iterations"
        )
    res["timings_s"]["generator"] = time.perf_counter() - t0
    parser = ConfigParser()
    parser.read_config([str(gen_bundle / "configs" / c) for c in ("inference.json", "demo.json")])
    for k, v in gen_over.items():
        parser[k] = v
    parser["bundle_root"] = str(gen_bundle)
    parser["mask_split"] = "validation"
    parser["device"] = f"$torch.device('{device}')"
    unet = load_weights(parser.get_parsed_content("network_def"), weights).to(device).eval()
    denoiser = _Autocast(ConcatConditionedUNet(unet), cfg, device)
    prediction_type = parser.get_parsed_content("prediction_type")
    dataset = parser.get_parsed_content("dataset")
    n = min(cfg["quality_masks"], len(dataset))
    idx = [round(i * (len(dataset) - 1) / max(n - 1, 1)) for i in range(n)]
    items = [dataset[i] for i in idx]
    cond = torch.stack([torch.as_tensor(it["cond"]).float() for it in items]).to(device)
    labels = torch.stack([torch.as_tensor(it["label"]).long() for it in items])
    noise = seeded_noise((1, *cond.shape[2:]), list(range(n)), device)
    res.update({"masks": n, "split": "validation", "prediction_type": prediction_type, "size": gen_size})
    res["dice"], res["dice_per_class"] = {}, {}
    t0 = time.perf_counter()
    with torch.no_grad():
        for name, steps in SAMPLER_SETTINGS:
            sampler = ConditionalSampler(make_scheduler(name, prediction_type=prediction_type), steps)
            images = torch.cat(
                [sampler(denoiser, cond[i : i + 16], noise[i : i + 16]).float().cpu() for i in range(0, n, 16)]
            )
            d = faithfulness_dice(segmenter.predict, images, labels, NUM_CLASSES)
            per_class = [float(v) for v in torch.nanmean(d, 0)]
            res["dice_per_class"][f"{name}_{steps}"] = per_class
            res["dice"][f"{name}_{steps}"] = float(torch.tensor(per_class).nanmean())
        real = torch.stack([torch.as_tensor(it["image"]).float() for it in items])
        d = faithfulness_dice(segmenter.predict, real, labels, NUM_CLASSES)
        res["dice"]["real_images"] = float(torch.nanmean(d, 0).nanmean())
    res["timings_s"]["sampling"] = time.perf_counter() - t0
    return res


# ------------------------------------------------------------------------------------------------------- driver
def _run_worker(cfg: dict, kind: str, method: str = "", variant: str = "") -> dict:
    if cfg.get("in_process"):  # tests: no fresh process per variant (peak RSS is then the run's, not the variant's)
        return (
            quality_worker(cfg)
            if kind == "quality"
            else {"train": train_worker, "sample": sample_worker}[kind](cfg, method, variant)
        )
    cmd = [sys.executable, __file__, "--worker", kind, "--worker_method", method, "--worker_variant", variant]
    cmd += ["--worker_cfg", json.dumps(cfg)]
    r = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=str(REPO))
    if r.returncode != 0:
        raise RuntimeError(f"{kind}/{method}/{variant} failed:\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def _fmt(v: float | None, digits: int = 2) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def summarize(result: dict) -> dict:
    """Ratios ours / reference per method, and the fastest sampler setting at equal quality."""
    tol = result["config"]["dice_tolerance"]
    quality = result.get("quality") or {}
    dice = quality.get("dice", {})
    equal = [k for k, v in dice.items() if k != "real_images" and "ddim_50" in dice and v >= dice["ddim_50"] - tol]
    summary: dict[str, Any] = {"equal_quality_settings": equal}
    peak = result["env"].get("bf16_peak_tflops")
    for m in result["config"]["methods"]:
        tr, sa = result["train"][m], result["sample"][m]
        o_set = sa["ours"]["settings"]
        fastest = max(equal or ["ddim_50"], key=lambda k: o_set[k]["images_per_s"])
        s: dict[str, Any] = {
            "train_images_per_s": {v: tr[v]["images_per_s"] for v in ("ours", "reference")},
            "train_speedup": tr["ours"]["images_per_s"] / tr["reference"]["images_per_s"],
            "train_memory_ratio": tr["ours"]["peak_mib"] / tr["reference"]["peak_mib"],
            "sample_speedup_ddim50": o_set["ddim_50"]["images_per_s"]
            / sa["reference"]["settings"]["ddim_50"]["images_per_s"],
            "sample_equal_quality_setting": fastest,
            "sample_speedup_equal_quality": o_set[fastest]["images_per_s"]
            / sa["reference"]["settings"]["ddim_50"]["images_per_s"],
            "sample_memory_ratio": sa["ours"]["peak_mib"] / sa["reference"]["peak_mib"],
        }
        if peak:
            s["train_mfu"] = {
                v: tr[v]["flops_per_step"] / tr[v]["step_s"] / (peak * 1e12) for v in ("ours", "reference")
            }
        summary[m] = s
    return summary


def markdown(result: dict) -> str:
    cfg, env, summ = result["config"], result["env"], result["summary"]
    mem = "peak CUDA memory (MiB)" if cfg["device"].startswith("cuda") else "peak process RSS (MiB)"
    lines = [
        f"Device: {env['device_name']}; {env['date']}; torch {env['torch']}, monai {env['monai']}, "
        f"diffusers {env['diffusers']}; threads {env['threads']}.",
        f"Command: `{result['command']}`",
        f"Settings: {cfg['resolution']}x{cfg['resolution']}, train batch {cfg['batch']}, sample batch "
        f"{cfg['sample_batch']}, channels {tuple(cfg['channels'])}, {cfg['num_res_blocks']} res block(s); ours: bf16 "
        f"autocast {'on' if cfg['amp'] and (cfg['device'].startswith('cuda') or cfg['cpu_bf16']) else 'off'}, "
        f"channels_last {cfg['channels_last']}, compile {cfg['compile']}; reference fp32. Medians of "
        f"{cfg['steps']} steps after {cfg['warmup']} warm-up steps (sampling: median step time over {cfg['sample_repeats']} runs per setting, times the steps).",
        "",
        "| method | train img/s ours | train img/s ref | train ratio | train mem ratio | sample img/s ours "
        "DDIM50 | sample img/s ref DDIM50 | sample ratio DDIM50 | equal-quality setting | sample ratio "
        "equal quality | sample mem ratio | GFLOP/train step ours / ref |"
        + (" MFU ours / ref |" if env.get("bf16_peak_tflops") else ""),
        "|---|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if env.get("bf16_peak_tflops") else ""),
    ]
    for m in cfg["methods"]:
        s, tr, sa = summ[m], result["train"][m], result["sample"][m]
        row = (
            f"| {m} | {_fmt(tr['ours']['images_per_s'])} | {_fmt(tr['reference']['images_per_s'])} | "
            f"**{_fmt(s['train_speedup'])}** | {_fmt(s['train_memory_ratio'])} | "
            f"{_fmt(sa['ours']['settings']['ddim_50']['images_per_s'])} | "
            f"{_fmt(sa['reference']['settings']['ddim_50']['images_per_s'])} | {_fmt(s['sample_speedup_ddim50'])} | "
            f"{s['sample_equal_quality_setting']} | **{_fmt(s['sample_speedup_equal_quality'])}** | "
            f"{_fmt(s['sample_memory_ratio'])} | {_fmt(tr['ours']['flops_per_step'] / 1e9, 1)} / "
            f"{_fmt(tr['reference']['flops_per_step'] / 1e9, 1)} |"
        )
        if env.get("bf16_peak_tflops"):
            row += f" {_fmt(100 * s['train_mfu']['ours'], 1)}% / {_fmt(100 * s['train_mfu']['reference'], 1)}% |"
        lines.append(row)
    lines += ["", f"Ratios are ours / reference (throughput: higher is better; memory, {mem}: lower is better).", ""]
    lines += ["| method | sampler | steps | img/s | ratio vs ref DDIM50 |", "|---|---|---|---|---|"]
    for m in cfg["methods"]:
        ref = result["sample"][m]["reference"]["settings"]["ddim_50"]["images_per_s"]
        for k, v in result["sample"][m]["ours"]["settings"].items():
            lines.append(
                f"| {m} | {k.rsplit('_', 1)[0]} | {v['steps']} | {_fmt(v['images_per_s'])} | {_fmt(v['images_per_s'] / ref)} |"
            )
    q = result.get("quality")
    if q:
        lines += [
            "",
            f"Faithfulness (seg_guided_diffusion, {q['masks']} {q['split']} masks of the demo data at {q['size']}x"
            f"{q['size']}; generator: {q['generator']}; segmenter: {q['segmenter']}): mean foreground Dice "
            f"(CSF, GM, WM) between the segmenter's output on the generated image and the conditioning mask. "
            f"Equal quality = within {cfg['dice_tolerance']} of DDIM 50.",
            "",
            "| sampler setting | Dice | CSF | GM | WM |",
            "|---|---|---|---|---|",
        ]
        for k, v in q["dice"].items():
            pc = q["dice_per_class"].get(k, [float("nan")] * 3)
            lines.append(f"| {k} | {_fmt(v, 3)} | " + " | ".join(_fmt(x, 3) for x in pc) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    p.add_argument("--quick", action="store_true", help="CPU preset: 32x32, small channels (~5 minutes on 2 cores)")
    p.add_argument("--resolution", type=int, default=None)
    p.add_argument("--batch", type=int, default=None, help="training batch")
    p.add_argument("--sample_batch", type=int, default=None, help="masks sampled at once")
    p.add_argument("--channels", type=int, nargs="+", default=None)
    p.add_argument("--steps", type=int, default=None, help="timed training steps per variant")
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--sample_repeats", type=int, default=None)
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--no_amp", action="store_true", help="no bf16 autocast for ours on CUDA")
    p.add_argument("--cpu_bf16", action="store_true", help="bf16 autocast for ours on CPU too")
    p.add_argument("--channels_last", action="store_true")
    p.add_argument("--compile", action="store_true", help="torch.compile ours (eager fallback with a warning)")
    p.add_argument("--skip_quality", action="store_true", help="no faithfulness Dice")
    p.add_argument("--generator", default=None, help="seg_guided weights (demo.json architecture)")
    p.add_argument("--segmenter", default=None, help="segmenter for load_segmenter (bundle folder or weights)")
    p.add_argument("--quality_masks", type=int, default=None)
    p.add_argument("--quality_size", type=int, default=None, help="generator size when trained here")
    p.add_argument("--generator_iterations", type=int, default=None)
    p.add_argument("--segmenter_iterations", type=int, default=None)
    p.add_argument("--dice_tolerance", type=float, default=0.01)
    p.add_argument("--out", default="benchmark_results")
    p.add_argument(
        "--in_process",
        action="store_true",
        help="run every variant in this process (smoke tests; CPU memory not per variant)",
    )
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--worker_method", default="", help=argparse.SUPPRESS)
    p.add_argument("--worker_variant", default="", help=argparse.SUPPRESS)
    p.add_argument("--worker_cfg", default="{}", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        wcfg = json.loads(args.worker_cfg)
        fn = {"train": train_worker, "sample": sample_worker}.get(args.worker)
        out = quality_worker(wcfg) if args.worker == "quality" else fn(wcfg, args.worker_method, args.worker_variant)
        print(json.dumps(out))
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda but CUDA is not available")
    cfg = dict(QUICK if args.quick else FULL)
    for k in ("resolution", "batch", "sample_batch", "channels", "steps", "warmup", "sample_repeats", "quality_masks"):
        if getattr(args, k) is not None:
            cfg[k] = getattr(args, k)
    out_dir = Path(args.out).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg.update(
        {
            "device": args.device,
            "quick": args.quick,
            "methods": args.methods,
            "amp": not args.no_amp,
            "cpu_bf16": args.cpu_bf16,
            "channels_last": args.channels_last,
            "compile": args.compile,
            "dice_tolerance": args.dice_tolerance,
            "generator": args.generator,
            "segmenter": args.segmenter,
            "quality_size": args.quality_size or (32 if args.quick else 64),
            "generator_iterations": args.generator_iterations or (600 if args.quick else 1200),
            "segmenter_iterations": args.segmenter_iterations or (150 if args.quick else 600),
            "work_dir": str(out_dir / "work"),
            "in_process": args.in_process,
        }
    )
    cfg["norm_groups"] = min(cfg["norm_groups"], min(cfg["channels"]))
    cfg["head_channels"] = min(cfg["head_channels"], min(cfg["channels"]))
    if len(cfg["channels"]) != len(cfg["attention"]):
        cfg["attention"] = [False] * (len(cfg["channels"]) - 2) + [True, False][: len(cfg["channels"])]
    import diffusers
    import monai

    device = torch.device(args.device)
    env = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "device_name": (
            torch.cuda.get_device_name(device)
            if device.type == "cuda"
            else f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
        ),
        "torch": torch.__version__,
        "monai": monai.__version__,
        "diffusers": diffusers.__version__,
        "threads": torch.get_num_threads(),
        "bf16_peak_tflops": bf16_peak_tflops(device),
    }
    result: dict[str, Any] = {
        "command": "python scripts/benchmark.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "config": cfg,
        "env": env,
        "train": {},
        "sample": {},
    }
    t_start = time.perf_counter()
    for m in args.methods:
        result["train"][m], result["sample"][m] = {}, {}
        for v in ("ours", "reference"):
            r = _run_worker(cfg, "train", m, v)
            result["train"][m][v] = r
            print(f"train  {m:22s} {v:9s} {r['images_per_s']:8.2f} img/s  peak {r['peak_mib']:8.1f} MiB", flush=True)
        for v in ("ours", "reference"):
            r = _run_worker(cfg, "sample", m, v)
            result["sample"][m][v] = r
            best = ", ".join(f"{k} {s['images_per_s']:.2f}" for k, s in r["settings"].items())
            print(f"sample {m:22s} {v:9s} img/s: {best}  peak {r['peak_mib']:8.1f} MiB", flush=True)
    if not args.skip_quality:
        try:
            q = _run_worker(cfg, "quality")
            result["quality"] = q
            print("faithfulness Dice: " + ", ".join(f"{k} {v:.3f}" for k, v in q["dice"].items()), flush=True)
        except RuntimeError as e:  # keep the speed results
            result["quality_error"] = str(e)[-3000:]
            print(f"faithfulness failed: {e}", flush=True)
    result["wall_s"] = time.perf_counter() - t_start
    result["summary"] = summarize(result)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    base = out_dir / f"benchmark_{args.device}_{stamp}"
    from monai_siamese.utils import atomic_write_json, atomic_write_text

    atomic_write_json(f"{base}.json", result)
    md = markdown(result)
    atomic_write_text(f"{base}.md", md)
    print(md)
    print(f"written {base}.json and {base}.md ({result['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
