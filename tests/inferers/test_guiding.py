"""The dynamic adaptive guiding mask: shrinking region, and pixels outside the final region equal the canvas."""

from __future__ import annotations

import torch
from helpers import tiny_denoiser
from monai.networks.schedulers import DDIMScheduler

from monai_siamese.inferers import ConditionalSampler, DynamicGuidingMask, seeded_noise


def _setup():
    fg = torch.zeros(2, 1, 32, 32)
    fg[0, 0, 10:20, 10:20] = 1
    fg[1, 0, 4:28, 4:28] = 1
    known = torch.rand(2, 1, 32, 32) * 2 - 1
    return fg, known


def test_region_shrinks_with_t_and_scales_with_size():
    fg, known = _setup()
    g = DynamicGuidingMask(known, fg, DDIMScheduler(1000), margin_fraction=0.2, min_margin=1.0)
    m_T, m_0 = g.margin(999), g.margin(-1)
    torch.testing.assert_close(m_0, torch.tensor([1.0, 1.0]))
    torch.testing.assert_close(m_T, torch.tensor([2.0, 4.8]))  # 0.2 * sqrt(100), 0.2 * sqrt(576)
    assert (g.region(999).sum((1, 2, 3)) > g.region(500).sum((1, 2, 3))).all()
    assert (g.region(500).sum((1, 2, 3)) >= g.region(-1).sum((1, 2, 3))).all()
    assert (g.region(-1)[fg > 0] == 1).all()


def test_pixels_outside_the_final_region_equal_the_canvas():
    fg, known = _setup()
    den = tiny_denoiser(1).eval()
    sched = DDIMScheduler(1000)
    hook = DynamicGuidingMask(known, fg, sched, margin_fraction=0.2, min_margin=1.0, seeds=[0, 1])
    out = ConditionalSampler(sched, num_inference_steps=8)(den, fg, seeded_noise((1, 32, 32), [0, 1]), hooks=[hook])
    outside = hook.region(-1) == 0
    torch.testing.assert_close(out[outside], known.clamp(-1, 1)[outside])
    assert not torch.allclose(out[~outside], known[~outside])  # inside, the model paints
