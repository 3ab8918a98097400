"""The Siamese-Diffusion training step two ways, on the same network (Qiu et al., arXiv 2505.06068):

- :func:`reference_forward`: as the original implementation computes it: per iteration a frozen deep copy of the
  ControlNet for the mask residual of the image branch and a deep copy of the UNet for the image branch (its weight
  gradients are computed and thrown away); online augmentation on the whole batch, weighted 0/1 per sample;
- :func:`ours_forward`: what the bundle's inferer runs: no copies, a shared encoder, detached parameters for UNet_sg,
  online augmentation only for the selected samples.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

__all__ = ["reference_forward", "ours_forward", "siamese_network"]


def reference_forward(
    net: Any,
    images: torch.Tensor,
    noise: torch.Tensor,
    t: torch.Tensor,
    mask_hint: torch.Tensor,
    image_hint: torch.Tensor,
    image_weight: float,
    oa_active: bool,
    oa_max_t: int = 200,
) -> torch.Tensor:
    """The original step (see the module docstring). Returns the loss."""
    from monai_siamese.diffusion import diffusion_target, predict_x0

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
    net: Any,
    images: torch.Tensor,
    noise: torch.Tensor,
    t: torch.Tensor,
    mask_hint: torch.Tensor,
    image_hint: torch.Tensor,
    image_weight: float,
    oa_active: bool,
    oa_max_t: int = 200,
) -> torch.Tensor:
    """Our step (the network's training forward and :class:`~monai_siamese.engines.SiameseDiffusionLoss`)."""
    from monai_siamese.diffusion import diffusion_target
    from monai_siamese.engines import SiameseDiffusionLoss

    out = net(images, noise, t, mask_hint, image_hint, image_weight, (t <= oa_max_t) if oa_active else None)
    return SiameseDiffusionLoss()(out, diffusion_target(net.scheduler, images, noise, t, net.prediction_type))


def siamese_network(overrides: dict[str, Any], device: str | torch.device = "cpu", seed: int = 0) -> Any:
    """The Siamese-Diffusion bundle's ``network`` (``train.json`` with ``overrides``), as a network in training: the
    zero convolutions of the ControlNet and the UNet output are perturbed so they are no longer zero."""
    from bench.bundle_setup import bundle_parser

    parser = bundle_parser("siamese_diffusion", ("train.json",), {"seed": seed, **overrides}, device=device)
    net = parser.get_parsed_content("network")
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in list(net.controlnet.parameters()) + list(net.unet.out.parameters()):
            p.add_((torch.randn(p.shape, generator=gen) * 0.02).to(p))
    return net.to(device)
