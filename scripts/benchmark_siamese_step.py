"""Time per training step and peak memory of our Siamese-Diffusion step against a reference step that deep-copies the
ControlNet and the UNet on every iteration, as the original implementation does (Qiu et al., arXiv 2505.06068).

Both variants use the same networks (same seed), the same optimizer and the same batches (images, masks, timesteps,
noise). Each variant runs in its own subprocess so its peak memory is its own: on CUDA
``torch.cuda.max_memory_allocated``, on CPU the peak resident set size (``ru_maxrss``) of the process, reported with
the resident size before the first step (imports, networks, batches) so the step's own share is visible.

Two phases of training are timed: ``early`` (before online augmentation starts, w_i = 0.1) and ``late`` (online
augmentation on, w_i = 0.5); ``training`` weighs them by the fraction of training they cover (``--oa_start``).

    python scripts/benchmark_siamese_step.py --device cpu --size 64 --batch 8 --channels 32 64 128
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from monai.networks.nets import ControlNet, DiffusionModelUNet
from monai.networks.schedulers import DDPMScheduler

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from monai_siamese.diffusion import diffusion_target, predict_x0  # noqa: E402
from monai_siamese.engines.siamese import SiameseDiffusionLoss  # noqa: E402
from monai_siamese.inferers import make_image_hint  # noqa: E402
from monai_siamese.networks import SiameseDiffusionNetwork  # noqa: E402

PHASES = {"early": 0.1, "late": 0.5}  # fraction of training done (= w_i)


def build_networks(args: argparse.Namespace, seed: int = 0) -> SiameseDiffusionNetwork:
    torch.manual_seed(seed)
    arch = {
        "spatial_dims": 2,
        "in_channels": 1,
        "channels": tuple(args.channels),
        "attention_levels": tuple([False] * (len(args.channels) - 1) + [bool(args.attention)]),
        "num_res_blocks": args.num_res_blocks,
        "norm_num_groups": min(16, args.channels[0]),
        "num_head_channels": args.channels[-1] // 2,
    }
    unet = DiffusionModelUNet(out_channels=1, **arch)
    cn = ControlNet(
        conditioning_embedding_in_channels=args.num_classes, conditioning_embedding_num_channels=(16,), **arch
    )
    net = SiameseDiffusionNetwork(
        unet,
        cn,
        scheduler=DDPMScheduler(num_train_timesteps=1000),
        prediction_type=args.prediction_type,
        unet_mode=args.unet_mode,
    )
    with torch.no_grad():  # a network in training: the zero convolutions are no longer zero
        for p in list(cn.parameters()) + list(unet.out.parameters()):
            p.add_(torch.randn_like(p) * 0.02)
    return net


def make_batches(args: argparse.Namespace, n: int, device: torch.device) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(1234)
    out = []
    for _ in range(n):
        labels = torch.randint(0, args.num_classes, (args.batch, 1, args.size // 8, args.size // 8), generator=g)
        labels = torch.nn.functional.interpolate(labels.float(), scale_factor=8, mode="nearest").long()
        cond = torch.nn.functional.one_hot(labels[:, 0], args.num_classes).movedim(-1, 1).float()
        images = torch.rand((args.batch, 1, args.size, args.size), generator=g) * 2 - 1
        t = torch.randint(0, 1000, (args.batch,), generator=g)
        noise = torch.randn(images.shape, generator=g)
        out.append({k: v.to(device) for k, v in {"images": images, "cond": cond, "t": t, "noise": noise}.items()})
    return out


def reference_forward(
    net: SiameseDiffusionNetwork,
    images: torch.Tensor,
    noise: torch.Tensor,
    t: torch.Tensor,
    mask_hint: torch.Tensor,
    image_hint: torch.Tensor,
    image_weight: float,
    oa_active: bool,
    oa_max_t: int = 200,
) -> torch.Tensor:
    """The step as the original code computes it: per iteration a frozen deep copy of the ControlNet for the mask
    residual of the image branch and a deep copy of the UNet for the image branch (its weight gradients are computed
    and thrown away); online augmentation on the whole batch, weighted 0/1 per sample. Returns the loss."""
    unet, controlnet, sched, ptype = net.unet, net.controlnet, net.scheduler, net.prediction_type
    x_t = sched.add_noise(images, noise, t)
    target = diffusion_target(sched, images, noise, t, ptype)
    controlnet_frozen = copy.deepcopy(controlnet).requires_grad_(False)
    unet_image = copy.deepcopy(unet)

    down, mid = controlnet(x_t, t, controlnet_cond=mask_hint)
    pred_mask = unet(x_t, t, down_block_additional_residuals=down, mid_block_additional_residual=mid)
    down_i, mid_i = controlnet(x_t, t, controlnet_cond=image_hint)
    with torch.no_grad():
        down_f, mid_f = controlnet_frozen(x_t, t, controlnet_cond=mask_hint)
    down_c = [f.detach() + image_weight * i for f, i in zip(down_f, down_i)]
    mid_c = mid_f.detach() + image_weight * mid_i
    pred_image = unet_image(x_t, t, down_block_additional_residuals=down_c, mid_block_additional_residual=mid_c)

    def mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a.float() - b.float()).pow(2).flatten(1).mean(1)

    loss = mse(pred_mask, target) + mse(pred_image, target) + mse(pred_mask, pred_image.detach())
    weights = (t <= oa_max_t).float()
    if oa_active and bool(weights.any()):
        x0_hat = predict_x0(sched, x_t, pred_image, t, ptype)
        x_aug = sched.add_noise(x0_hat, noise, t).detach()
        target_oa = diffusion_target(sched, x0_hat, noise, t, ptype).detach()
        down_a, mid_a = controlnet(x_aug, t, controlnet_cond=mask_hint)
        pred_oa = unet(x_aug, t, down_block_additional_residuals=down_a, mid_block_additional_residual=mid_a)
        loss = loss + weights * mse(pred_oa, target_oa)
    return loss.mean()


def ours_forward(
    net: SiameseDiffusionNetwork,
    images: torch.Tensor,
    noise: torch.Tensor,
    t: torch.Tensor,
    mask_hint: torch.Tensor,
    image_hint: torch.Tensor,
    image_weight: float,
    oa_active: bool,
    oa_max_t: int = 200,
) -> torch.Tensor:
    """Our step (what ``SiameseDiffusionTrainer`` runs): no copies, shared encoder, detached parameters for UNet_sg,
    online augmentation only for the selected samples. Returns the loss."""
    out = net(images, noise, t, mask_hint, image_hint, image_weight, (t <= oa_max_t) if oa_active else None)
    return SiameseDiffusionLoss()(out, diffusion_target(net.scheduler, images, noise, t, net.prediction_type))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def worker(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    net = build_networks(args).to(device)
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-5)
    batches = make_batches(args, args.warmup + args.steps, device)
    forward = ours_forward if args.worker == "ours" else reference_forward
    w_i = PHASES[args.phase]
    oa = w_i > args.oa_start
    times = []
    base_rss = _rss_mib()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base_cuda = torch.cuda.memory_allocated(device) / 2**20
    for i, b in enumerate(batches):
        _sync(device)
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        hint = make_image_hint(b["images"], b["cond"].shape[1])
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=args.amp and device.type == "cuda"):
            loss = forward(net, b["images"], b["noise"], b["t"], b["cond"], hint, w_i, oa)
        loss.backward()
        opt.step()
        _sync(device)
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    res = {
        "variant": args.worker,
        "phase": args.phase,
        "median_s": statistics.median(times),
        "times_s": [round(x, 4) for x in times],
        "oa_samples": int(sum(int((b["t"] <= 200).sum()) for b in batches[args.warmup :])) if oa else 0,
    }
    if device.type == "cuda":
        res["peak_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
        res["base_mib"] = base_cuda
        res["memory"] = "torch.cuda.max_memory_allocated"
    else:
        res["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        res["base_mib"] = base_rss
        res["memory"] = "ru_maxrss (process peak RSS)"
    return res


def _run_worker(args: argparse.Namespace, variant: str, phase: str) -> dict:
    cmd = [sys.executable, __file__, "--worker", variant, "--phase", phase]
    for k in ("device", "size", "batch", "num_classes", "num_res_blocks", "steps", "warmup", "unet_mode"):
        cmd += [f"--{k}", str(getattr(args, k))]
    cmd += [
        "--prediction_type",
        args.prediction_type,
        "--oa_start",
        str(args.oa_start),
        "--attention",
        str(args.attention),
    ]
    cmd += ["--channels", *map(str, args.channels)] + (["--amp"] if args.amp else [])
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"{variant}/{phase} failed:\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--channels", type=int, nargs="+", default=[32, 64, 128])
    p.add_argument("--num_res_blocks", type=int, default=1)
    p.add_argument("--attention", type=int, default=0, help="1: attention at the deepest level")
    p.add_argument("--num_classes", type=int, default=4)
    p.add_argument("--unet_mode", default="decoder", choices=["all", "decoder", "none"])
    p.add_argument("--prediction_type", default="epsilon")
    p.add_argument("--oa_start", type=float, default=1 / 3)
    p.add_argument("--steps", type=int, default=10, help="timed steps per variant and phase")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=1, help="processes per variant and phase, run interleaved")
    p.add_argument("--phases", nargs="+", default=["early", "late"], choices=list(PHASES))
    p.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA)")
    p.add_argument("--worker", default=None, choices=["ours", "reference"], help=argparse.SUPPRESS)
    p.add_argument("--phase", default="early", choices=list(PHASES), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return 0
    print(
        f"Siamese-Diffusion step, device {args.device}, {args.size}x{args.size}, batch {args.batch}, channels "
        f"{tuple(args.channels)}, {args.num_res_blocks} res block(s), UNet mode {args.unet_mode}, "
        f"{args.prediction_type}, torch {torch.__version__}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')};"
        f" median of {args.steps} x {args.repeats} steps after {args.warmup} warm-up steps per process, each variant "
        "in its own processes",
        flush=True,
    )
    results = {}
    for phase in args.phases:
        for rep in range(args.repeats):  # interleaved, so a change of machine load hits both variants
            for variant in ("ours", "reference"):
                r = _run_worker(args, variant, phase)
                if rep == 0:
                    results[(phase, variant)] = r
                else:
                    prev = results[(phase, variant)]
                    prev["times_s"] += r["times_s"]
                    prev["peak_mib"], prev["base_mib"] = max(prev["peak_mib"], r["peak_mib"]), r["base_mib"]
        for variant in ("ours", "reference"):
            r = results[(phase, variant)]
            r["median_s"] = statistics.median(r["times_s"])
            print(
                f"  {phase:5s} {variant:9s} {r['median_s'] * 1000:8.1f} ms/step  peak {r['peak_mib']:8.1f} MiB "
                f"(before first step {r['base_mib']:.1f} MiB; {r['memory']})"
                + (f"  [OA samples {r['oa_samples']}]" if r["oa_samples"] else ""),
                flush=True,
            )
    summary = {}
    for phase in args.phases:
        o, r = results[(phase, "ours")], results[(phase, "reference")]
        summary[phase] = {
            "speedup": r["median_s"] / o["median_s"],
            "memory_ratio": o["peak_mib"] / r["peak_mib"],
            "step_memory_ratio": (o["peak_mib"] - o["base_mib"]) / max(r["peak_mib"] - r["base_mib"], 1e-9),
        }
        print(
            f"{phase:5s}: ours {summary[phase]['speedup']:.2f}x faster; peak memory ours/reference "
            f"{summary[phase]['memory_ratio']:.2f} (above the pre-step level: {summary[phase]['step_memory_ratio']:.2f})"
        )
    if set(PHASES) <= set(args.phases):
        f = args.oa_start

        def train(v: str) -> float:
            return f * results[("early", v)]["median_s"] + (1 - f) * results[("late", v)]["median_s"]

        print(f"training ({f:.2f} early + {1 - f:.2f} late): ours {train('reference') / train('ours'):.2f}x faster")
    return 0


if __name__ == "__main__":
    sys.exit(main())
