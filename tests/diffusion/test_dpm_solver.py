"""DPM-Solver++ (2M): convergence on a Gaussian toy with the exact denoiser, the DDPM sampler's step count, and the
sampler-name wiring (package and bundles' inference.json)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler, RFlowScheduler

from monai_siamese.bundles import config_files
from monai_siamese.diffusion import DPMSolverMultistepScheduler, SamplerType, make_scheduler
from monai_siamese.inferers import ConditionalSampler

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"

MU, STD = 0.1, 0.3  # data x0 ~ N(MU, STD^2) per pixel


def _gaussian_denoiser(scheduler):
    """The exact epsilon-predictor of Gaussian data: E[x0 | x_t] is known in closed form."""
    abar_all = scheduler.alphas_cumprod

    def denoiser(x, t, cond):
        abar = abar_all[t].view(-1, *[1] * (x.ndim - 1)).to(x)
        a, s = abar.sqrt(), (1 - abar).sqrt()
        x0 = MU + a * STD**2 / (a * a * STD**2 + s * s) * (x - a * MU)
        return (x - a * x0) / s

    return denoiser


def _ode_solution(noise, scheduler):
    """The probability-flow ODE of Gaussian data keeps the standardised coordinate: the exact x_0 for x_T."""
    abar = scheduler.alphas_cumprod[-1]
    return MU + STD * (noise - abar.sqrt() * MU) / torch.sqrt(abar * STD**2 + 1 - abar)


def _error(scheduler, steps, noise):
    x = ConditionalSampler(scheduler, num_inference_steps=steps)(_gaussian_denoiser(scheduler), noise[:, :0], noise)
    return float((x - _ode_solution(noise, scheduler)).abs().mean())


def test_dpm_solver_converges_in_few_steps_on_a_gaussian():
    noise = torch.randn(128, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    dpm = {n: _error(DPMSolverMultistepScheduler(clip_sample=False), n, noise) for n in (5, 10, 20, 50)}
    ddim50 = _error(DDIMScheduler(1000, clip_sample=False), 50, noise)
    assert dpm[50] < dpm[20] < dpm[10] < dpm[5]  # converges
    assert dpm[10] < 0.01 and dpm[50] < 0.002
    assert dpm[10] < ddim50  # 10 second-order steps beat 50 DDIM steps


def test_dpm_solver_first_step_is_ddim_and_timesteps():
    s = DPMSolverMultistepScheduler()
    s.set_timesteps(10)
    ts = [int(t) for t in s.timesteps]
    assert ts[0] == 999 and ts[-1] == 0 and ts == sorted(ts, reverse=True) and len(ts) == 10
    lin = DPMSolverMultistepScheduler(timestep_spacing="linspace")
    lin.set_timesteps(10)
    assert [int(t) for t in lin.timesteps] == [999, 899, 799, 699, 599, 500, 400, 300, 200, 100]
    # the first (first-order) step equals the deterministic DDIM update between the same timesteps
    x, eps = torch.randn(2, 1, 8, 8), torch.randn(2, 1, 8, 8) * 0.1
    prev, x0 = s.step(eps, ts[0], x)
    a_s, a_t = s.alphas_cumprod[ts[0]], s.alphas_cumprod[ts[1]]
    x0_ref = ((x - (1 - a_s).sqrt() * eps) / a_s.sqrt()).clamp(-1, 1)
    torch.testing.assert_close(x0, x0_ref)
    torch.testing.assert_close(
        prev, a_t.sqrt() * x0_ref + (1 - a_t).sqrt() * (x - a_s.sqrt() * x0_ref) / (1 - a_s).sqrt()
    )
    with pytest.raises(ValueError):
        s.step(eps, 123, x)


@pytest.mark.parametrize("prediction_type", ["v_prediction", "sample"])
def test_dpm_solver_prediction_types_agree_with_epsilon(prediction_type):
    """The same clean-image prediction through epsilon, v or x0 output gives the same step."""
    ref = DPMSolverMultistepScheduler(prediction_type="epsilon")
    other = DPMSolverMultistepScheduler(prediction_type=prediction_type)
    for s in (ref, other):
        s.set_timesteps(5)
    x = torch.randn(1, 1, 8, 8)

    def outputs(t, x0):
        abar = ref.alphas_cumprod[t]
        eps = (x - abar.sqrt() * x0) / (1 - abar).sqrt()
        return eps, (abar.sqrt() * eps - (1 - abar).sqrt() * x0 if prediction_type == "v_prediction" else x0)

    x0s = [torch.rand(1, 1, 8, 8) * 2 - 1 for _ in range(2)]
    for t, x0 in zip(ref.timesteps[:2].tolist(), x0s):  # a first- then a second-order step
        eps, out = outputs(t, x0)
        torch.testing.assert_close(ref.step(eps, t, x)[0], other.step(out, t, x)[0], atol=1e-4, rtol=1e-4)


def test_make_scheduler_and_sampler_by_name():
    assert isinstance(make_scheduler(SamplerType.DDIM), DDIMScheduler)  # the enum itself, not only its value
    assert isinstance(make_scheduler(SamplerType.DPMPP_2M), DPMSolverMultistepScheduler)
    assert isinstance(make_scheduler("ddim"), DDIMScheduler)
    assert isinstance(make_scheduler("DDPM"), DDPMScheduler)
    dpm = make_scheduler("dpmpp_2m", prediction_type="v_prediction", timestep_spacing="linspace")
    assert isinstance(dpm, DPMSolverMultistepScheduler) and dpm.prediction_type == "v_prediction"
    assert isinstance(ConditionalSampler("dpmpp_2m").scheduler, DPMSolverMultistepScheduler)
    assert isinstance(ConditionalSampler().scheduler, DDIMScheduler)
    assert isinstance(make_scheduler("euler", prediction_type="flow"), RFlowScheduler)
    with pytest.raises(ValueError, match="rectified-flow"):
        make_scheduler("ddim", prediction_type="flow")
    with pytest.raises(ValueError, match="DDPM-trained"):
        make_scheduler("euler")
    with pytest.raises(ValueError):
        make_scheduler("heun")


@pytest.mark.parametrize("bundle", ["seg_guided_diffusion", "siamese_diffusion", "meddiff_ft"])
def test_inference_json_sampler_key(bundle):
    for name, cls in (("ddim", DDIMScheduler), ("dpmpp_2m", DPMSolverMultistepScheduler)):
        parser = ConfigParser()
        parser.read_config(config_files(BUNDLES / bundle, ["inference.json"]))
        parser["sampler"] = name
        assert isinstance(parser.get_parsed_content("scheduler"), cls)


def test_ddpm_sampler_runs_every_timestep_or_refuses():
    """MONAI's DDPMScheduler.step goes from t to t - 1: with all T steps it samples the data distribution; asked for
    fewer it would sample another process (mean -0.35 for -0.9 at 50 steps), so it refuses with the alternatives."""
    scheduler = make_scheduler("ddpm", 1000, "linear_beta", "epsilon")
    noise = torch.randn(512, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="'ddpm' .* needs num_inference_steps >= 1000 \\(got 50\\).*dpmpp_2m"):
        ConditionalSampler(scheduler, num_inference_steps=50)(_gaussian_denoiser(scheduler), noise[:, :0], noise)
    x = ConditionalSampler(scheduler, num_inference_steps=1000)(
        _gaussian_denoiser(scheduler), noise[:, :0], noise, generator=torch.Generator().manual_seed(1)
    )
    assert abs(float(x.mean()) - MU) < 0.02 and abs(float(x.std()) - STD) < 0.02, (float(x.mean()), float(x.std()))
