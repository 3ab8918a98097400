"""MONAI's DDIM with consistent clipping (``ClippedDDIMScheduler``, what ``sampler: ddim`` builds)."""

from __future__ import annotations

import pytest
import torch
from monai.networks.schedulers import DDIMScheduler

from monai_siamese.diffusion import ClippedDDIMScheduler, make_scheduler


@pytest.mark.parametrize("ptype", ["epsilon", "v_prediction"])
def test_clipped_ddim_keeps_the_step_on_the_line_through_the_clipped_prediction(ptype):
    """Where x_0 leaves [-1, 1], the noise of the step is the one of x_t and the clipped x_0 (MONAI keeps the model's,
    which broke guided samples: see ClippedDDIMScheduler); inside the range, and unclipped, it is MONAI's step."""
    ours, monai = ClippedDDIMScheduler(1000, prediction_type=ptype), DDIMScheduler(1000, prediction_type=ptype)
    assert isinstance(make_scheduler("ddim", prediction_type=ptype), ClippedDDIMScheduler)
    for s in (ours, monai):
        s.set_timesteps(50)
    t, t_prev = 500, 480
    a, a_prev = ours.alphas_cumprod[t], ours.alphas_cumprod[t_prev]
    x0 = torch.tensor([-1.6, -1.0, -0.3, 0.4, 1.3])
    eps = torch.tensor([0.3, -0.7, 1.2, 0.1, -0.4])
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
    out = eps if ptype == "epsilon" else a.sqrt() * eps - (1 - a).sqrt() * x0
    prev, pred_x0 = ours.step(out, t, x_t)
    prev_monai, pred_x0_monai = monai.step(out, t, x_t)
    x0c = x0.clamp(-1, 1)
    torch.testing.assert_close(pred_x0, x0c)
    torch.testing.assert_close(pred_x0_monai, x0c)
    eps_c = (x_t - a.sqrt() * x0c) / (1 - a).sqrt()
    torch.testing.assert_close(prev, a_prev.sqrt() * x0c + (1 - a_prev).sqrt() * eps_c, atol=1e-5, rtol=1e-5)
    inside = (x0.abs() <= 1).nonzero().flatten()
    torch.testing.assert_close(prev[inside], prev_monai[inside], atol=1e-5, rtol=1e-5)
    assert (prev[0] - prev_monai[0]).abs() > 0.05  # where x_0 was clipped, the two differ
    assert ours.prediction_type == ptype  # restored after the step
    unclipped = ClippedDDIMScheduler(1000, prediction_type=ptype, clip_sample=False)
    unclipped.set_timesteps(50)
    reference = DDIMScheduler(1000, prediction_type=ptype, clip_sample=False)
    reference.set_timesteps(50)
    torch.testing.assert_close(unclipped.step(out, t, x_t)[0], reference.step(out, t, x_t)[0])

