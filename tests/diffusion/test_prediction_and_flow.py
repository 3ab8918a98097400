"""The diffusion math in one place: prediction-type conversions for the DDPM and rectified-flow processes, min-SNR
weights, the training targets of the prepare-batch, and few-step rectified-flow sampling on a Gaussian toy."""

from __future__ import annotations

import pytest
import torch
from monai.networks.schedulers import DDPMScheduler, RFlowScheduler

from monai_siamese.diffusion import (
    Objective,
    PredictionType,
    add_noise,
    diffusion_target,
    guidance_combine,
    make_noise_scheduler,
    min_snr_weight,
    predict_eps,
    predict_x0,
    prediction_for,
)
from monai_siamese.engines import ConditionalDiffusionPrepareBatch, DiffusionLoss
from monai_siamese.inferers import ConditionalSampler


def _schedulers():
    return [DDPMScheduler(1000), make_noise_scheduler("rflow", 1000)]


@pytest.mark.parametrize("scheduler", _schedulers(), ids=["ddpm", "rflow"])
def test_every_prediction_converts_back_to_x0_and_eps(scheduler):
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.rand(3, 1, 8, 8, generator=g) * 2 - 1, torch.randn(3, 1, 8, 8, generator=g)
    t = torch.tensor([10, 400, 900])
    x_t = add_noise(scheduler, x0, eps, t)
    torch.testing.assert_close(x_t, scheduler.add_noise(x0, eps, t), atol=1e-5, rtol=1e-5)  # MONAI's own noising
    types = ["flow"] if isinstance(scheduler, RFlowScheduler) else ["epsilon", "v_prediction", "sample"]
    for ptype in types:
        target = diffusion_target(scheduler, x0, eps, t, ptype)
        torch.testing.assert_close(predict_x0(scheduler, x_t, target, t, ptype), x0, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(predict_eps(scheduler, x_t, target, t, ptype), eps, atol=1e-3, rtol=1e-3)
    if isinstance(scheduler, DDPMScheduler):  # our velocity is MONAI's
        torch.testing.assert_close(
            diffusion_target(scheduler, x0, eps, t, "v_prediction"), scheduler.get_velocity(x0, eps, t)
        )


def test_objective_and_prediction_names():
    assert (
        prediction_for("rflow", "epsilon") == "flow"
        and prediction_for(Objective.DDPM, "v_prediction") == "v_prediction"
    )
    with pytest.raises(ValueError, match="rflow"):
        prediction_for("ddpm", "flow")
    assert isinstance(make_noise_scheduler(Objective.RFLOW), RFlowScheduler)
    assert make_noise_scheduler("ddpm", prediction_type="v_prediction").prediction_type == "v_prediction"
    assert PredictionType("flow") == PredictionType.FLOW
    torch.testing.assert_close(guidance_combine(torch.ones(1), torch.zeros(1), 3.0), torch.tensor([3.0]))


def test_min_snr_weights_cap_the_low_noise_end():
    s = DDPMScheduler(1000)
    t = torch.tensor([0, 100, 500, 999])
    w = min_snr_weight(s, t, gamma=5.0, prediction_type="epsilon")
    assert float(w[0]) < 0.01 and float(w[-1]) == pytest.approx(1.0)  # SNR >> 5 at t=0 is down-weighted
    assert torch.all(min_snr_weight(s, t, 5.0, "v_prediction") <= 1.0)


def test_prepare_batch_targets_and_weighted_loss():
    images = torch.rand(4, 1, 8, 8) * 2 - 1
    batch = {"image": images, "cond": torch.zeros(4, 2, 8, 8)}
    flow = make_noise_scheduler("rflow")
    pb = ConditionalDiffusionPrepareBatch(1000, prediction_type="flow", scheduler=flow)
    x0, target, _, kw = pb(batch, "cpu")
    assert kw["timesteps"].dtype.is_floating_point and float(kw["timesteps"].min()) >= 0
    torch.testing.assert_close(target, x0 - kw["noise"])
    with pytest.raises(ValueError, match="does not fit"):
        ConditionalDiffusionPrepareBatch(1000, prediction_type="epsilon", scheduler=flow)
    ddpm = DDPMScheduler(1000)
    pb = ConditionalDiffusionPrepareBatch(1000, prediction_type="epsilon", scheduler=ddpm, min_snr_gamma=5.0)
    _, (target, weights), _, kw = pb(batch, "cpu")
    torch.testing.assert_close(weights, min_snr_weight(ddpm, kw["timesteps"], 5.0))
    loss = DiffusionLoss()
    pred = torch.zeros_like(target)
    per = target.pow(2).flatten(1).mean(1)
    torch.testing.assert_close(loss(pred, (target, weights)), (per * weights).mean())
    torch.testing.assert_close(loss(pred, target), torch.nn.functional.mse_loss(pred, target))


def test_rectified_flow_euler_sampling_converges_to_the_transport():
    """With the exact flow velocity of Gaussian data, Euler steps along the flow converge to the exact transport of
    the noise, and the sample statistics are right already at a few steps."""
    mu, std = 0.1, 0.3
    scheduler = make_noise_scheduler("rflow", 1000)

    def velocity(x, t, cond):  # E[x0 - eps | x_t] for x0 ~ N(mu, std^2), eps ~ N(0, 1), x_t = (1-s) x0 + s eps
        s = (t.float() / 1000).view(-1, *[1] * (x.ndim - 1))
        a = 1 - s
        var = a * a * std**2 + s * s
        x0 = mu + a * std**2 / var * (x - a * mu)
        eps = s / var * (x - a * mu)
        return x0 - eps

    noise = torch.randn(256, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    exact = mu + std * noise  # the deterministic transport of the ODE for Gaussian data
    err, outs = {}, {}
    for n in (8, 16, 50):
        outs[n] = ConditionalSampler(scheduler, num_inference_steps=n)(velocity, noise[:, :0], noise)
        err[n] = float((outs[n] - exact).abs().mean())
    assert err[50] < err[16] < err[8] < 0.1 and err[50] < 0.01
    assert abs(float(outs[8].mean()) - mu) < 0.05 and abs(float(outs[50].std()) - std) < 0.02
