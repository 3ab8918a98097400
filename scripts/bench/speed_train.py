"""Training speed of a bundle against the reference projects' training loop, both built from the bundle's config.

- ours: the bundle's ``train#trainer`` as it runs (data pipeline, prepare-batch, handlers; bf16 autocast without a
  gradient scaler on CUDA, fused AdamW on CUDA, optional ``channels_last`` and ``torch.compile``), run in blocks
  (:class:`~bench.bundle_setup.TrainerBlocks`);
- reference: the loop of mazurowski-lab/segmentation-guided-diffusion ``training.py``: diffusers ``UNet2DModel`` with
  the bundle network's channels, blocks, attention and groups, fp32, DDPM noise, MSE, AdamW, grad clip 1.0, cosine LR
  with warm-up, ``loss.item()`` every step (MedDiff-FT: the same loop with the inpainting channels); for
  Siamese-Diffusion the original step that deep-copies the ControlNet and the UNet every iteration
  (``scripts/benchmark_siamese_step.py``) on a copy of the bundle's network.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from bench.bundle_setup import NETWORK_KEY, bundle_parser, first_batch, network_overrides
from bench.timing import Block, timed_steps

__all__ = ["speed_overrides", "arch_of", "reference_unet", "ReferenceLoop", "SiameseReferenceLoop", "step_flops"]


def speed_overrides(cfg: Mapping[str, Any], method: str, device: torch.device) -> dict[str, Any]:
    """Bundle overrides of a speed preset: size, batch, network, precision and compile options."""
    over: dict[str, Any] = {
        "num_workers": 0,
        "amp": bool(cfg["amp"]) and device.type == "cuda",
        "channels_last": bool(cfg["channels_last"]),
        "compile": bool(cfg["compile"]),
        "num_iterations": 100_000,
        "epoch_length": 1000,
        "sample_interval": 0,
        "checkpoint_interval": 100_000,
        "validate_data": False,
    }
    if cfg.get("channels"):
        over.update(
            network_overrides(
                method,
                cfg["channels"],
                attention_levels=cfg["attention"],
                num_res_blocks=cfg["num_res_blocks"],
                num_head_channels=cfg["head_channels"],
                norm_num_groups=cfg["norm_groups"],
            )
        )
        if method == "siamese_diffusion":
            over["hint_channels"] = list(cfg["hint_channels"])
    return over


def arch_of(parser: Any, method: str) -> dict[str, Any]:
    """The UNet definition of a parsed bundle config (channels, attention, blocks, heads, groups, in/out)."""
    key = NETWORK_KEY[method]
    get = parser.get_parsed_content
    return {
        "in_channels": get(f"{key}#in_channels"),
        "out_channels": get(f"{key}#out_channels"),
        "channels": list(get(f"{key}#channels")),
        "attention_levels": list(get(f"{key}#attention_levels")),
        "num_res_blocks": get(f"{key}#num_res_blocks"),
        "num_head_channels": get(f"{key}#num_head_channels"),
        "norm_num_groups": get(f"{key}#norm_num_groups"),
    }


def reference_unet(arch: Mapping[str, Any], size: int, device: torch.device) -> torch.nn.Module:
    """diffusers ``UNet2DModel`` as the reference builds it, with the bundle network's architecture."""
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    att = arch["attention_levels"]
    return UNet2DModel(
        sample_size=size,
        in_channels=arch["in_channels"],
        out_channels=arch["out_channels"],
        layers_per_block=arch["num_res_blocks"],
        block_out_channels=tuple(arch["channels"]),
        norm_num_groups=arch["norm_num_groups"],
        attention_head_dim=arch["num_head_channels"],
        down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in att),
        up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(att)),
    ).to(device)


class ReferenceLoop:
    """The segmentation-guided reference training loop (see the module docstring), ``iterations`` steps per block,
    on the bundle's first batch."""

    def __init__(self, parser: Any, method: str, size: int, iterations: int, device: torch.device) -> None:
        from diffusers import DDPMScheduler
        from diffusers.optimization import get_cosine_schedule_with_warmup

        self.device, self.iterations = device, int(iterations)
        self.model = reference_unet(arch_of(parser, method), size, device).train()
        self.sched = DDPMScheduler(num_train_timesteps=1000)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4)
        self.lr = get_cosine_schedule_with_warmup(self.opt, num_warmup_steps=500, num_training_steps=100_000)
        batch = first_batch(parser, device)
        self.clean, self.cond = batch["image"], batch["cond"]
        self.batch_size = int(self.clean.shape[0])

    def step(self) -> torch.Tensor:
        noise = torch.randn_like(self.clean)
        t = torch.randint(0, 1000, (self.clean.shape[0],), device=self.device).long()
        noisy = self.sched.add_noise(self.clean, noise, t)
        pred = self.model(torch.cat((noisy, self.cond), dim=1), t, return_dict=False)[0]
        loss = F.mse_loss(pred, noise)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        self.lr.step()
        self.opt.zero_grad()
        _ = loss.detach().item()  # the reference logs the loss every step
        return loss

    def __call__(self) -> Block:
        return timed_steps(self.step, self.iterations, self.batch_size, self.device)

    def flops(self) -> int:
        from bench.timing import count_flops

        return count_flops(self.step)


class SiameseReferenceLoop(ReferenceLoop):
    """The original Siamese-Diffusion step (deep copies every iteration) on a copy of the bundle's network, fp32,
    with the image-hint weight and online augmentation of the phase."""

    def __init__(
        self, parser: Any, iterations: int, device: torch.device, image_weight: float, oa_active: bool
    ) -> None:
        self.device, self.iterations = device, int(iterations)
        self.net = parser.get_parsed_content("network").to(device).train()
        self.opt = torch.optim.AdamW([p for p in self.net.parameters() if p.requires_grad], lr=1e-5)
        batch = first_batch(parser, device)
        self.clean, self.cond = batch["image"], batch["cond"]
        self.batch_size = int(self.clean.shape[0])
        self.image_weight, self.oa_active = image_weight, oa_active

    def step(self) -> torch.Tensor:
        from bench.siamese_step import reference_forward
        from monai_siamese.inferers.siamese import make_image_hint

        t = torch.randint(0, 1000, (self.clean.shape[0],), device=self.device)
        noise = torch.randn_like(self.clean)
        self.opt.zero_grad(set_to_none=True)
        hint = make_image_hint(self.clean, self.cond.shape[1])
        loss = reference_forward(self.net, self.clean, noise, t, self.cond, hint, self.image_weight, self.oa_active)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.net.parameters(), 1.0)
        self.opt.step()
        _ = loss.item()
        return loss


def step_flops(parser: Any, method: str, device: torch.device, amp: bool, oa_active: bool = True) -> int:
    """FLOPs of one of our training steps (forward + backward of the bundle's network on its batch, as
    :class:`~bench.bundle_setup.PlainLoop` computes it), under bf16 autocast when ``amp``."""
    from bench.bundle_setup import PlainLoop
    from bench.timing import count_flops

    loop = PlainLoop(parser, 1, method, image_weight=0.5, oa_active=oa_active)

    def run() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loop.step()

    return count_flops(run)


def build_ours(cfg: Mapping[str, Any], method: str, device: torch.device, work: str, phase_over: Mapping | None = None):
    """The bundle parser and its trainer blocks for a speed preset."""
    from bench.bundle_setup import TrainerBlocks

    over = {**speed_overrides(cfg, method, device), **dict(phase_over or {})}
    parser = bundle_parser(method, ("train.json",), over, work, device, cfg["resolution"], cfg["batch"])
    trainer = parser.get_parsed_content("train#trainer")
    return parser, TrainerBlocks(trainer, cfg["steps"])
