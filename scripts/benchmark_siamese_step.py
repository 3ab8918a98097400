"""Time per training step and peak memory of our Siamese-Diffusion step against the reference step that deep-copies
the ControlNet and the UNet on every iteration, as the original implementation does (Qiu et al., arXiv 2505.06068).

Both variants use the Siamese-Diffusion bundle's network (``train.json`` with the size overrides below, the same
seed), the same optimizer settings and the same batches (images, masks, timesteps, noise). Timing: both variants in
one process, interleaved in blocks of ``--steps`` steps (ours, reference, ours, reference, ...), ``--repeats`` rounds
after a warm-up round; the speed-up is the median over rounds of the per-round ratio, with its min-max. Memory: each
variant once more in its own process (``torch.cuda.max_memory_allocated`` on CUDA, the peak RSS on CPU, with the
resident size before the first step so the step's own share is visible).

Two phases of training: ``early`` (before online augmentation, w_i = 0.1) and ``late`` (augmentation on, w_i = 0.5);
``training`` weighs them by the fraction of training they cover (``--oa_start``).

    python scripts/benchmark_siamese_step.py --device cpu --size 64 --batch 8 --channels 32 64 128
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
for _p in (str(REPO / "scripts"), str(REPO)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from bench.output import fmt, fmt_spread, run_json_worker  # noqa: E402
from bench.siamese_step import ours_forward, reference_forward, siamese_network  # noqa: E402
from bench.timing import Block, interleave, peak_memory, reset_memory, spread, sync  # noqa: E402

PHASES = {"early": 0.1, "late": 0.5}  # fraction of training done (= w_i)


def overrides(args: argparse.Namespace) -> dict:
    """Bundle overrides of the network size."""
    n = len(args.channels)
    return {
        "unet_def#channels": list(args.channels),
        "unet_def#attention_levels": [False] * (n - 1) + [bool(args.attention)],
        "unet_def#num_res_blocks": args.num_res_blocks,
        "unet_def#norm_num_groups": min(16, args.channels[0]),
        "unet_def#num_head_channels": args.channels[-1] // 2,
        "hint_channels": [16],
        "num_classes": args.num_classes,
        "prediction_type": args.prediction_type,
        "unet_mode": args.unet_mode,
    }


def make_batches(args: argparse.Namespace, n: int, device: torch.device) -> list[dict[str, torch.Tensor]]:
    """Random masks (8x8 blocks), images, timesteps and noise, the same for both variants."""
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


class Stepper:
    """``steps`` training steps of one variant per call (a timed :class:`~bench.timing.Block`)."""

    def __init__(self, args: argparse.Namespace, variant: str, phase: str, device: torch.device) -> None:
        from monai_siamese.inferers.siamese import make_image_hint

        self.make_hint = make_image_hint
        self.net = siamese_network(overrides(args), device)
        self.opt = torch.optim.AdamW([p for p in self.net.parameters() if p.requires_grad], lr=1e-5)
        self.batches = make_batches(args, args.steps, device)
        self.forward = ours_forward if variant == "ours" else reference_forward
        self.w_i = PHASES[phase]
        self.oa = self.w_i > args.oa_start
        self.amp = args.amp and device.type == "cuda"
        self.device = device

    def step(self, b: dict[str, torch.Tensor]) -> None:
        self.opt.zero_grad(set_to_none=True)
        hint = self.make_hint(b["images"], b["cond"].shape[1])
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp):
            loss = self.forward(self.net, b["images"], b["noise"], b["t"], b["cond"], hint, self.w_i, self.oa)
        loss.backward()
        self.opt.step()

    def __call__(self) -> Block:
        sync(self.device)
        w0, c0 = time.perf_counter(), time.process_time()
        for b in self.batches:
            self.step(b)
        sync(self.device)
        n = len(self.batches) * self.batches[0]["images"].shape[0]
        return Block(n, time.perf_counter() - w0, time.process_time() - c0)


def memory_worker(args: argparse.Namespace) -> dict:
    """Peak memory of one variant and phase, in this process."""
    device = torch.device(args.device)
    stepper = Stepper(args, args.worker, args.phase, device)
    base = reset_memory(device)
    stepper()
    return {"variant": args.worker, "phase": args.phase, "base_mib": base, **peak_memory(device)}


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
    p.add_argument("--steps", type=int, default=4, help="steps per timed block")
    p.add_argument("--repeats", type=int, default=5, help="interleaved rounds (>= 3)")
    p.add_argument("--phases", nargs="+", default=["early", "late"], choices=list(PHASES))
    p.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA)")
    p.add_argument("--no_memory", action="store_true", help="skip the per-variant memory processes")
    p.add_argument("--worker", default=None, choices=["ours", "reference"], help=argparse.SUPPRESS)
    p.add_argument("--phase", default="early", choices=list(PHASES), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(memory_worker(args)))
        return 0
    device = torch.device(args.device)
    print(
        f"Siamese-Diffusion step, device {args.device}, {args.size}x{args.size}, batch {args.batch}, channels "
        f"{tuple(args.channels)}, {args.num_res_blocks} res block(s), UNet mode {args.unet_mode}, "
        f"{args.prediction_type}, torch {torch.__version__}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')};"
        f" {args.repeats} interleaved rounds of {args.steps} steps per variant after a warm-up round",
        flush=True,
    )
    per_round: dict[str, list[list[float]]] = {"ours": [], "reference": []}
    for phase in args.phases:
        inter = interleave(
            {v: Stepper(args, v, phase, device) for v in ("ours", "reference")}, repeats=args.repeats, warmup=1
        )
        speed = inter.ratio("ours", "reference", "wall")
        line = f"{phase}: ours {fmt_spread(speed)}x faster (CPU clock {fmt_spread(inter.ratio('ours', 'reference', 'cpu'))})"
        for v in ("ours", "reference"):
            ms = spread([1000 * b.wall_s / (b.items / args.batch) for b in inter.blocks[v]])
            line += f"; {v} {fmt_spread(ms, 1)} ms/step"
            w = args.oa_start if phase == "early" else 1 - args.oa_start
            per_round[v].append([w * b.wall_s / b.items for b in inter.blocks[v]])
        print(line, flush=True)
        if not args.no_memory:
            mem = {}
            for v in ("ours", "reference"):
                cmd = [sys.executable, __file__, "--worker", v, "--phase", phase] + _forward_args(args)
                mem[v] = run_json_worker(cmd)
            o, r = mem["ours"], mem["reference"]
            step_ratio = (o["peak_mib"] - o["base_mib"]) / max(r["peak_mib"] - r["base_mib"], 1e-9)
            print(
                f"       peak memory ours/reference {fmt(o['peak_mib'] / r['peak_mib'])} (above the pre-step level: "
                f"{fmt(step_ratio)}; {o['memory']}: ours {o['peak_mib']:.0f} MiB, reference {r['peak_mib']:.0f} MiB)",
                flush=True,
            )
    if set(PHASES) <= set(args.phases):
        sec = {v: [sum(x) for x in zip(*per_round[v])] for v in per_round}
        ratio = spread([r / o for o, r in zip(sec["ours"], sec["reference"])])
        f = args.oa_start
        print(f"training ({f:.2f} early + {1 - f:.2f} late): ours {fmt_spread(ratio)}x faster (median (min-max))")
    return 0


def _forward_args(args: argparse.Namespace) -> list[str]:
    out = []
    for k in ("device", "size", "batch", "num_classes", "num_res_blocks", "steps", "unet_mode", "prediction_type"):
        out += [f"--{k}", str(getattr(args, k))]
    out += [
        "--oa_start",
        str(args.oa_start),
        "--attention",
        str(args.attention),
        "--channels",
        *map(str, args.channels),
    ]
    return out + (["--amp"] if args.amp else [])


if __name__ == "__main__":
    sys.exit(main())
