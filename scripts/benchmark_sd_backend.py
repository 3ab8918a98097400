"""CPU time per training step, time of a short sampling run and peak memory of the three methods on the diffusers
backend, with the tiny random Stable Diffusion folder of the tests (UNet (32, 64), VAE with factor 2, 2-layer CLIP).

Each method runs in its own subprocess so the peak resident set size (``ru_maxrss``) is its own; the resident size
before the first step (imports, networks, optimizer, batch) is reported beside it. A step is what the bundle's trainer
does: VAE encoding of the batch (``LatentDiffusionPrepareBatch``), forward, loss, backward, AdamW step.

These numbers are for the tiny models only: they check the plumbing's overhead, not Stable Diffusion's cost.

    python scripts/benchmark_sd_backend.py --size 32 --batch 2 --steps 5
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

METHODS = ("seg_guided_concat", "siamese_controlnet", "meddiff_inpaint")


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_one(method: str, sd_dir: str, size: int, batch: int, steps: int, checkpointing: bool) -> dict:
    import torch
    import torch.nn.functional as F

    from monai_siamese.engines import LatentDiffusionPrepareBatch, SiameseDiffusionLoss, make_image_hint
    from monai_siamese.inferers import LatentSampler, seeded_noise
    from monai_siamese.networks import ConcatConditionedUNet, DiffusersSiameseNetwork, StableDiffusionComponents

    torch.manual_seed(0)
    sd = StableDiffusionComponents(sd_dir, prompt="an mri slice", gradient_checkpointing=checkpointing)
    n_cls, img = 4, torch.rand(batch, 1, size, size) * 2 - 1
    onehot = F.one_hot(torch.randint(0, n_cls, (batch, size, size)), n_cls).permute(0, 3, 1, 2).float()
    if method == "siamese_controlnet":
        codec = sd.codec(1, "pixel")
        unet = sd.unet()
        net = DiffusersSiameseNetwork(unet, sd.controlnet(unet, n_cls), sd.scheduler(), unet_mode="decoder")
        denoiser = net.denoiser()
        cond = onehot
    elif method == "seg_guided_concat":
        codec = sd.codec(1, "latent")
        net = sd.unet(codec.latent_channels + n_cls)
        denoiser = ConcatConditionedUNet(net)
        cond = onehot
    else:
        codec = sd.codec(1, "inpaint")
        net = sd.unet(codec.latent_channels + codec.condition_channels(n_cls + 2))
        denoiser = ConcatConditionedUNet(net)
        region = torch.zeros(batch, 1, size, size)
        region[:, :, size // 4 : size // 2, size // 4 : size // 2] = 1
        cond = torch.cat([onehot, img * (1 - region), region], 1)
    scheduler = sd.scheduler("DDPMScheduler")
    prep = LatentDiffusionPrepareBatch(codec, scheduler.num_train_timesteps, "cond", scheduler=scheduler)
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    loss_fn = SiameseDiffusionLoss()
    data = {"image": img, "cond": cond}

    def step(i: int) -> float:
        images, target, _, kw = prep(data, "cpu")
        noise, t, c = kw["noise"], kw["timesteps"], kw["condition"]
        if method == "siamese_controlnet":
            hint = make_image_hint(img, n_cls, size=c.shape[2:])
            out = net(images, noise, t, c, hint, 0.5, t <= 200)
            loss = loss_fn(out, target)["loss"]
        else:
            pred = net(torch.cat([scheduler.add_noise(images, noise, t), c], 1), t)
            loss = F.mse_loss(pred, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())

    rss_before = _rss_mb()
    step(0)  # warm-up
    times = []
    for i in range(steps):
        t0 = time.process_time()
        step(i + 1)
        times.append(time.process_time() - t0)
    sampler = LatentSampler(codec, sd.scheduler("DDIMScheduler"), num_inference_steps=2)
    t0 = time.process_time()
    denoiser.eval()
    out = sampler(denoiser, cond, seeded_noise((1, size, size), list(range(batch))))
    sample_s = time.process_time() - t0
    return {
        "method": method,
        "size": size,
        "batch": batch,
        "gradient_checkpointing": checkpointing,
        "trainable_params": sum(p.numel() for p in params),
        "cpu_s_per_step": sorted(times)[len(times) // 2],
        "cpu_s_sampling_2_steps": sample_s,
        "rss_before_mb": rss_before,
        "peak_rss_mb": _rss_mb(),
        "sample_shape": list(out.shape),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--gradient_checkpointing", action="store_true")
    ap.add_argument("--method", choices=METHODS, default=None, help="run one method in this process")
    ap.add_argument("--sd_dir", default=None, help="a diffusers folder (default: build the tiny one)")
    args = ap.parse_args()
    if args.method is not None:
        res = run_one(args.method, args.sd_dir, args.size, args.batch, args.steps, args.gradient_checkpointing)
        print(json.dumps(res))
        return
    with tempfile.TemporaryDirectory() as tmp:
        sd_dir = args.sd_dir
        if sd_dir is None:
            from sd_tiny import make_tiny_stable_diffusion

            sd_dir = str(make_tiny_stable_diffusion(Path(tmp) / "tiny-sd"))
            sd_inp = str(make_tiny_stable_diffusion(Path(tmp) / "tiny-sd-inpaint", inpainting=True))
        else:
            sd_inp = sd_dir
        print(f"torch threads: {os.environ.get('OMP_NUM_THREADS', 'default')}; size {args.size}, batch {args.batch}")
        print(
            f"{'method':20s} {'params':>9s} {'CPU s/step':>10s} {'sample 2 st':>11s} {'RSS before':>10s} {'peak RSS':>9s}"
        )
        for m in METHODS:
            cmd = [sys.executable, __file__, "--method", m, "--size", str(args.size), "--batch", str(args.batch)]
            cmd += ["--steps", str(args.steps), "--sd_dir", sd_inp if m == "meddiff_inpaint" else sd_dir]
            if args.gradient_checkpointing:
                cmd.append("--gradient_checkpointing")
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                print(m, "failed:", r.stderr[-2000:])
                continue
            res = json.loads(r.stdout.strip().splitlines()[-1])
            print(
                f"{m:20s} {res['trainable_params']:9d} {res['cpu_s_per_step']:10.3f} {res['cpu_s_sampling_2_steps']:11.3f}"
                f" {res['rss_before_mb']:8.0f}MB {res['peak_rss_mb']:7.0f}MB"
            )


if __name__ == "__main__":
    main()
