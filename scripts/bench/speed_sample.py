"""Sampling speed: our ``ConditionalSampler`` (several samplers and step counts, bf16 on CUDA) over the bundle's
denoiser against the reference's fp32 DDIM 50 loop (diffusers ``UNet2DModel`` + ``DDIMScheduler``; MONAI ControlNet +
UNet with MONAI's ``DDIMScheduler`` for Siamese-Diffusion), on the same masks and noise; one sampling run of each
variant per block, interleaved."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from bench.bundle_setup import first_batch
from bench.timing import Block, count_flops, timed_steps

__all__ = ["SAMPLER_SETTINGS", "Autocast", "our_denoiser", "sampling_variants"]

#: (sampler, steps) settings of our sampler; the first is the quality baseline (the reference's sampler)
SAMPLER_SETTINGS = (("ddim", 50), ("ddim", 25), ("ddim", 10), ("dpmpp_2m", 20), ("dpmpp_2m", 10))


class Autocast(torch.nn.Module):
    """A denoiser under bf16 autocast (our sampling on CUDA), float32 output for the solver."""

    def __init__(self, denoiser: torch.nn.Module, enabled: bool, device: torch.device) -> None:
        super().__init__()
        self.denoiser, self.enabled, self.device = denoiser, enabled, device

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.enabled):
            return self.denoiser(x, t, cond).float()


def our_denoiser(parser: Any, method: str, device: torch.device, amp: bool, channels_last: bool) -> torch.nn.Module:
    """The bundle's network as a sampling denoiser (Mask-Diffusion only for Siamese-Diffusion)."""
    from monai_siamese.engines import to_channels_last
    from monai_siamese.networks import ConcatConditionedUNet

    net = parser.get_parsed_content("network")
    den = net.denoiser() if method == "siamese_diffusion" else ConcatConditionedUNet(net)
    return Autocast(to_channels_last(den.eval(), channels_last), amp, device)


def sampling_variants(
    parser: Any, method: str, cfg: Mapping[str, Any], device: torch.device
) -> tuple[dict[str, Callable[[], Block]], dict[str, int], dict[str, int]]:
    """Blocks of every sampler setting of ours (``ours <sampler>_<steps>``) and of the reference (``reference
    ddim_50``), the steps of each, and FLOPs per network evaluation (``ours``, ``reference``)."""
    from bench.speed_train import arch_of, reference_unet
    from monai_siamese.diffusion import make_scheduler
    from monai_siamese.inferers import ConditionalSampler, seeded_noise

    bs, size = int(cfg["sample_batch"]), int(cfg["resolution"])
    batch = first_batch(parser, device)
    cond = batch["cond"][:bs]
    if cond.shape[0] < bs:
        cond = cond.repeat(-(-bs // cond.shape[0]), 1, 1, 1)[:bs]
    noise = seeded_noise((1, size, size), list(range(bs)), device)
    amp = bool(cfg["amp"]) and device.type == "cuda"
    den = our_denoiser(parser, method, device, amp, cfg["channels_last"])
    variants: dict[str, Callable[[], Block]] = {}
    steps: dict[str, int] = {}
    for name, n in SAMPLER_SETTINGS:
        sampler = ConditionalSampler(make_scheduler(name, prediction_type="epsilon"), num_inference_steps=n)
        key = f"ours {name}_{n}"
        variants[key] = lambda s=sampler: timed_steps(lambda: s(den, cond, noise), 1, bs, device)
        steps[key] = n
    t500 = torch.full((bs,), 500, device=device, dtype=torch.long)
    with torch.no_grad():
        flops = {"ours": count_flops(lambda: den(noise, t500, cond))}
    if method == "siamese_diffusion":
        from monai.networks.schedulers import DDIMScheduler

        net = parser.get_parsed_content("network").eval()
        sched = DDIMScheduler(1000)

        def model(x: torch.Tensor, t: Any) -> torch.Tensor:
            ts = torch.full((x.shape[0],), int(t), device=device, dtype=torch.long)
            down, mid = net.controlnet(x, ts, controlnet_cond=cond)
            return net.unet(x, ts, down_block_additional_residuals=down, mid_block_additional_residual=mid)

        def ref() -> torch.Tensor:
            sched.set_timesteps(50)
            x = noise
            for t in sched.timesteps:
                x, _ = sched.step(model(x, t), int(t), x)
            return x

    else:
        from diffusers import DDIMScheduler

        unet = reference_unet(arch_of(parser, method), size, device).eval()
        dsched = DDIMScheduler(num_train_timesteps=1000)

        def model(x: torch.Tensor, t: Any) -> torch.Tensor:
            return unet(torch.cat((x, cond), dim=1), t, return_dict=False)[0]

        def ref() -> torch.Tensor:  # the reference's evaluation loop (DDIM, 50 steps, fp32)
            dsched.set_timesteps(50)
            x = noise
            for t in dsched.timesteps:
                x = dsched.step(model(x, t), t, x).prev_sample
            return x

    def ref_block() -> Block:
        with torch.no_grad():
            return timed_steps(ref, 1, bs, device)

    variants["reference ddim_50"] = ref_block
    steps["reference ddim_50"] = 50
    with torch.no_grad():
        flops["reference"] = count_flops(lambda: model(noise, torch.tensor(500, device=device)))
    return variants, steps, flops
