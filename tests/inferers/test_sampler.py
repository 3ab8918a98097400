"""Sampler: determinism, guidance arithmetic, latent interpolation, hooks."""

from __future__ import annotations

import pytest
import torch
from helpers import tiny_denoiser
from monai.networks.schedulers import DDIMScheduler

from monai_siamese.inferers import ConditionalSampler, LatentInterpolation, seeded_noise


def test_seeded_noise_depends_only_on_the_seed():
    a = seeded_noise((1, 8, 8), [3, 4, 5])
    b = seeded_noise((1, 8, 8), [5, 3])
    torch.testing.assert_close(a[2], b[0])
    torch.testing.assert_close(a[0], b[1])
    assert not torch.allclose(a[0], a[1])


def test_same_seed_same_sample_and_guidance_math():
    den = tiny_denoiser(2).eval()
    cond = torch.zeros(2, 2, 16, 16)
    cond[:, 1, 4:12, 4:12] = 1
    cond[:, 0] = 1 - cond[:, 1]
    noise = seeded_noise((1, 16, 16), [1, 2])
    s = ConditionalSampler(DDIMScheduler(1000), num_inference_steps=5)
    x1, x2 = s(den, cond, noise), s(den, cond, noise.clone())
    torch.testing.assert_close(x1, x2)
    assert x1.shape == (2, 1, 16, 16) and float(x1.abs().max()) <= 1.0
    # guidance: eps = eps_u + s (eps_c - eps_u), both passes in one batch; MONAI zero-initialises the UNet's output
    # convolution, so the weights are perturbed first (else both passes are 0 and any combination passes)
    with torch.no_grad():
        for p in den.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    g = ConditionalSampler(DDIMScheduler(1000), num_inference_steps=5, guidance_scale=3.0)
    x = torch.randn(2, 1, 16, 16)
    t = torch.full((2,), 500, dtype=torch.long)
    with torch.no_grad():
        eps_c = den(x, t, cond)
        eps_u = den(x, t, torch.full_like(cond, -1.0))
        assert float((eps_c - eps_u).abs().max()) > 1e-3  # the condition matters
        torch.testing.assert_close(g.predict(den, x, 500, cond), eps_u + 3.0 * (eps_c - eps_u), atol=1e-5, rtol=1e-4)


def test_guidance_interval_guides_only_inside_it():
    calls = []

    def den(x, t, cond):
        calls.append((int(t[0]), x.shape[0]))
        return torch.zeros_like(x)

    cond = torch.zeros(2, 2, 8, 8)
    noise = seeded_noise((1, 8, 8), [1, 2])
    s = ConditionalSampler(DDIMScheduler(1000), 10, guidance_scale=2.0, guidance_interval=[0.0, 0.5])
    s(den, cond, noise)
    assert len(calls) == 10 and calls[0][0] == 999
    assert all(b == (4 if t / 1000 <= 0.5 else 2) for t, b in calls), calls  # both passes in one batch inside only
    assert {b for _, b in calls} == {2, 4}
    with pytest.raises(ValueError, match="guidance_interval"):
        ConditionalSampler(DDIMScheduler(1000), guidance_interval=[0.6, 0.2])


def test_latent_interpolation_lambda_one_forgets_the_initial_noise():
    den = tiny_denoiser(2).eval()
    cond = torch.zeros(1, 2, 16, 16)
    cond[:, 0] = 1
    ref = torch.rand(1, 1, 16, 16) * 2 - 1
    s = ConditionalSampler(DDIMScheduler(1000), num_inference_steps=10)
    interp = LatentInterpolation(ref, lam=1.0, t_tilde=400, seeds=[0])
    a = s(den, cond, seeded_noise((1, 16, 16), [1]), interpolation=interp)
    b = s(den, cond, seeded_noise((1, 16, 16), [2]), interpolation=interp)
    torch.testing.assert_close(a, b)
    c = s(den, cond, seeded_noise((1, 16, 16), [1]), interpolation=LatentInterpolation(ref, 0.0, 400, [0]))
    d = s(den, cond, seeded_noise((1, 16, 16), [1]))
    torch.testing.assert_close(c, d)  # lambda 0 = no interpolation


def test_hooks_run_after_every_step():
    den = tiny_denoiser(2).eval()
    cond = torch.ones(1, 2, 8, 8) * 0.5
    calls = []

    def hook(x, t, t_prev):
        calls.append((t, t_prev))
        return torch.zeros_like(x)  # overwrite: the result must be exactly the hook's output

    s = ConditionalSampler(DDIMScheduler(1000), num_inference_steps=4)
    out = s(den, cond, torch.randn(1, 1, 8, 8), hooks=[hook])
    assert len(calls) == 4 and calls[-1][1] == -1 and calls[0][0] > calls[1][0]
    assert float(out.abs().max()) == 0



@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize("steps", [10, 50])
def test_oracle_denoiser_recovers_the_single_training_image(prediction_type, steps):
    """With the exact prediction for a one-image data distribution, DDIM must land on that image: checks the
    sampling loop against MONAI's scheduler for every prediction type."""
    sched = DDIMScheduler(1000, prediction_type=prediction_type)
    c = torch.linspace(-0.8, 0.8, 64).reshape(1, 1, 8, 8)
    ab = sched.alphas_cumprod

    def oracle(x, t, cond):
        a = ab[t].reshape(-1, 1, 1, 1)
        eps = (x - a.sqrt() * c) / (1 - a).sqrt()
        if prediction_type == "epsilon":
            return eps
        if prediction_type == "sample":
            return c.expand_as(x)
        return a.sqrt() * eps - (1 - a).sqrt() * c

    s = ConditionalSampler(sched, num_inference_steps=steps)
    out = s(oracle, torch.zeros(2, 1, 8, 8), seeded_noise((1, 8, 8), [0, 1]))
    torch.testing.assert_close(out, c.expand(2, -1, -1, -1), atol=2e-3, rtol=0)


def test_to_source_grid_inverts_the_fit_transform():
    """A non-square slice fitted to 32 x 32 (longest side resized, then padded) comes back onto its own grid."""
    from monai.data import MetaTensor

    from monai_siamese.data import fit_slice_transform
    from monai_siamese.inferers import to_source_grid

    src = torch.zeros(1, 40, 24)
    src[:, 10:30, 6:18] = 1.0
    fitted = fit_slice_transform(32)({"image": MetaTensor(src * 2 - 1), "label": MetaTensor(src)})["image"]
    back = to_source_grid(fitted.as_tensor(), (40, 24))
    assert back.shape == (1, 40, 24)
    assert float(((back > 0) == (src > 0.5)).float().mean()) > 0.97
