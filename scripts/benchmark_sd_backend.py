"""CPU time per training step, time of a short sampling run and peak memory of the three methods on the diffusers
backend, with the tiny random Stable Diffusion folder of the tests (UNet (32, 64), VAE with factor 2, 2-layer CLIP).

A step is what the bundle's trainer does: VAE encoding of the batch (``LatentDiffusionPrepareBatch``), forward, loss,
backward, AdamW step. Timing: every variant (method, and with ``--gradient_checkpointing both`` with and without
checkpointing) is built in one process and run interleaved, ``--steps`` steps per block, ``--repeats`` rounds after a
warm-up round (A B C A B C ...); each figure is the median over rounds with its min-max, and the checkpointing cost is
the per-round ratio. Memory: each method once more in its own process (peak RSS, ``ru_maxrss``; the resident size
before the first step is reported beside it).

These numbers are for the tiny models only: they check the plumbing's overhead, not Stable Diffusion's cost.

    python scripts/benchmark_sd_backend.py --size 32 --batch 2 --steps 3 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for _p in (str(REPO / "scripts"), str(REPO), str(REPO / "tests")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from bench.output import fmt, fmt_spread, run_json_worker  # noqa: E402
from bench.timing import Block, interleave, spread  # noqa: E402

METHODS = ("seg_guided_concat", "siamese_controlnet", "meddiff_inpaint")


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class Variant:
    """One method's training step and sampling run on the tiny Stable Diffusion components."""

    def __init__(self, method: str, sd_dir: str, size: int, batch: int, steps: int, checkpointing: bool) -> None:
        import torch
        import torch.nn.functional as F

        from monai_siamese.engines import LatentDiffusionPrepareBatch, SiameseDiffusionLoss
        from monai_siamese.networks import ConcatConditionedUNet, DiffusersSiameseNetwork, StableDiffusionComponents

        torch.manual_seed(0)
        sd = StableDiffusionComponents(sd_dir, prompt="an mri slice", gradient_checkpointing=checkpointing)
        n_cls, img = 4, torch.rand(batch, 1, size, size) * 2 - 1
        onehot = F.one_hot(torch.randint(0, n_cls, (batch, size, size)), n_cls).permute(0, 3, 1, 2).float()
        if method == "siamese_controlnet":
            self.codec = sd.codec(1, "pixel")
            unet = sd.unet()
            self.net = DiffusersSiameseNetwork(unet, sd.controlnet(unet, n_cls), sd.scheduler(), unet_mode="decoder")
            self.denoiser = self.net.denoiser()
            cond = onehot
        elif method == "seg_guided_concat":
            self.codec = sd.codec(1, "latent")
            self.net = sd.unet(self.codec.latent_channels + n_cls)
            self.denoiser = ConcatConditionedUNet(self.net)
            cond = onehot
        else:
            self.codec = sd.codec(1, "inpaint")
            self.net = sd.unet(self.codec.latent_channels + self.codec.condition_channels(n_cls + 2))
            self.denoiser = ConcatConditionedUNet(self.net)
            region = torch.zeros(batch, 1, size, size)
            region[:, :, size // 4 : size // 2, size // 4 : size // 2] = 1
            cond = torch.cat([onehot, img * (1 - region), region], 1)
        self.method, self.sd, self.img, self.cond, self.n_cls, self.size, self.steps = (
            method,
            sd,
            img,
            cond,
            n_cls,
            size,
            steps,
        )
        self.scheduler = sd.scheduler("DDPMScheduler")
        self.prep = LatentDiffusionPrepareBatch(
            self.codec, self.scheduler.num_train_timesteps, "cond", scheduler=self.scheduler
        )
        self.params = [p for p in self.net.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=1e-5)
        self.loss_fn = SiameseDiffusionLoss()

    def step(self) -> float:
        import torch.nn.functional as F

        from monai_siamese.inferers.siamese import make_image_hint

        images, target, _, kw = self.prep({"image": self.img, "cond": self.cond}, "cpu")
        noise, t, c = kw["noise"], kw["timesteps"], kw["condition"]
        if self.method == "siamese_controlnet":
            hint = make_image_hint(self.img, self.n_cls, size=c.shape[2:])
            out = self.net(images, noise, t, c, hint, 0.5, t <= 200)
            loss = self.loss_fn(out, target)
        else:
            import torch

            pred = self.net(torch.cat([self.scheduler.add_noise(images, noise, t), c], 1), t)
            loss = F.mse_loss(pred, target)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return float(loss.detach())

    def __call__(self) -> Block:
        w0, c0 = time.perf_counter(), time.process_time()
        for _ in range(self.steps):
            self.step()
        return Block(self.steps * self.img.shape[0], time.perf_counter() - w0, time.process_time() - c0)

    def sample_cpu_s(self) -> float:
        """CPU seconds of a 2-step DDIM sampling run of the batch."""
        from monai_siamese.inferers import LatentSampler, seeded_noise

        sampler = LatentSampler(self.codec, self.sd.scheduler("DDIMScheduler"), num_inference_steps=2)
        self.denoiser.eval()
        t0 = time.process_time()
        sampler(self.denoiser, self.cond, seeded_noise((1, self.size, self.size), list(range(self.img.shape[0]))))
        return time.process_time() - t0


def memory_worker(args: argparse.Namespace) -> dict[str, Any]:
    """Peak RSS of one method in this process (a warm-up step and ``--steps`` steps)."""
    v = Variant(args.method, args.sd_dir, args.size, args.batch, args.steps, args.gradient_checkpointing == "on")
    before = _rss_mb()
    v.step()
    v()
    return {
        "method": args.method,
        "rss_before_mb": before,
        "peak_rss_mb": _rss_mb(),
        "trainable_params": sum(p.numel() for p in v.params),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3, help="steps per timed block")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved rounds (>= 3)")
    ap.add_argument("--gradient_checkpointing", choices=["off", "on", "both"], default="off")
    ap.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    ap.add_argument("--no_memory", action="store_true", help="skip the per-method memory processes")
    ap.add_argument("--method", choices=METHODS, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--sd_dir", default=None, help="a diffusers folder (default: build the tiny one)")
    ap.add_argument("--sd_inpaint_dir", default=None, help="a diffusers inpainting folder (default: tiny)")
    args = ap.parse_args(argv)
    if args.method is not None:
        print(json.dumps(memory_worker(args)))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        sd_dir, sd_inp = args.sd_dir, args.sd_inpaint_dir or args.sd_dir
        if sd_dir is None:
            from sd_tiny import make_tiny_stable_diffusion

            sd_dir = str(make_tiny_stable_diffusion(Path(tmp) / "tiny-sd"))
            sd_inp = str(make_tiny_stable_diffusion(Path(tmp) / "tiny-sd-inpaint", inpainting=True))
        modes = {"off": [False], "on": [True], "both": [False, True]}[args.gradient_checkpointing]
        variants = {}
        for m in args.methods:
            for ck in modes:
                d = sd_inp if m == "meddiff_inpaint" else sd_dir
                variants[f"{m}{' +ckpt' if ck else ''}"] = Variant(m, d, args.size, args.batch, args.steps, ck)
        print(
            f"torch threads: {os.environ.get('OMP_NUM_THREADS', 'default')}; size {args.size}, batch {args.batch}; "
            f"{args.repeats} interleaved rounds of {args.steps} steps per variant"
        )
        inter = interleave(variants, repeats=args.repeats, warmup=1)
        print(f"{'variant':28s} {'CPU s/step median (min-max)':>30s} {'sample 2 st CPU-s':>18s}")
        for name, v in variants.items():
            per_step = [b.cpu_s / args.steps for b in inter.blocks[name]]
            print(f"{name:28s} {fmt_spread(spread(per_step), 3):>30s} {v.sample_cpu_s():18.3f}")
        if args.gradient_checkpointing == "both":
            for m in args.methods:
                r = inter.ratio(m, f"{m} +ckpt", "cpu")
                print(f"{m}: step time with / without gradient checkpointing {fmt_spread(r)}x (CPU clock)")
        if not args.no_memory:
            print(f"{'method':20s} {'params':>9s} {'RSS before':>10s} {'peak RSS':>9s}")
            for m in args.methods:
                cmd = [sys.executable, __file__, "--method", m, "--size", str(args.size), "--batch", str(args.batch)]
                cmd += ["--steps", str(args.steps), "--sd_dir", sd_inp if m == "meddiff_inpaint" else sd_dir]
                cmd += ["--gradient_checkpointing", "on" if args.gradient_checkpointing == "on" else "off"]
                res = run_json_worker(cmd)
                print(
                    f"{m:20s} {res['trainable_params']:9d} {fmt(res['rss_before_mb'], 0):>8s}MB {fmt(res['peak_rss_mb'], 0):>7s}MB"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
