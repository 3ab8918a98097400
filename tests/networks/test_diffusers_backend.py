"""The diffusers backend on a tiny random Stable Diffusion folder saved with ``save_pretrained`` and loaded back
through :class:`StableDiffusionComponents`: weights and schedule as saved, the fixed prompt, input-channel adaptation,
ControlNet from the UNet, the Siamese gradients, the VAE codec and the latent sampler."""

from __future__ import annotations

import gc

import pytest
import torch
from sd_tiny import make_tiny_stable_diffusion

from monai_siamese.engines import LatentDiffusionPrepareBatch
from monai_siamese.inferers import ConditionalSampler, DynamicGuidingMask, LatentSampler, seeded_noise
from monai_siamese.networks import (
    ControlNetConditionedUNet,
    DiffusersSiameseNetwork,
    PretrainedModelError,
    StableDiffusionComponents,
    check_pretrained_dir,
)


@pytest.fixture(scope="module")
def sd_dir(tmp_path_factory):
    return make_tiny_stable_diffusion(tmp_path_factory.mktemp("sd") / "tiny")


@pytest.fixture(scope="module")
def sd(sd_dir):
    return StableDiffusionComponents(sd_dir, prompt="a brain")


def test_loaded_weights_schedule_and_prompt(sd_dir, sd):
    from diffusers import DDIMScheduler
    from safetensors.torch import load_file
    from transformers import CLIPTextModel

    saved = load_file(str(sd_dir / "unet" / "diffusion_pytorch_model.safetensors"))
    own = sd.unet().unet.state_dict()
    assert set(saved) == set(own) and all(torch.equal(saved[k], own[k]) for k in saved)
    assert sd.prompt_embeds.shape == (1, 16, 32) and not torch.equal(sd.prompt_embeds, sd.negative_embeds)
    gc.collect()
    assert not any(isinstance(o, CLIPTextModel) for o in gc.get_objects())  # the text encoder was freed
    ref = DDIMScheduler.from_pretrained(str(sd_dir / "scheduler"))
    for kind in ("DDPMScheduler", "DDIMScheduler"):
        s = sd.scheduler(kind)
        torch.testing.assert_close(s.alphas_cumprod.float(), ref.alphas_cumprod.float())
        assert s.clip_sample is False and s.prediction_type == "epsilon"


def test_check_pretrained_dir_names_what_is_missing(tmp_path, sd_dir):
    with pytest.raises(PretrainedModelError, match="pretrained_path is not set"):
        check_pretrained_dir(None)
    with pytest.raises(PretrainedModelError, match="folder not found"):
        check_pretrained_dir(tmp_path / "nope")
    (tmp_path / "partial" / "unet").mkdir(parents=True)
    (tmp_path / "partial" / "tokenizer").mkdir()
    with pytest.raises(PretrainedModelError) as info:
        check_pretrained_dir(tmp_path / "partial")
    msg = str(info.value).split("Expected")[0]
    for part in ("model_index.json", "unet/config.json", "unet/ has no weights", "vae/ (folder missing)"):
        assert part in msg, part
    assert "text_encoder/ (folder missing)" in msg and "tokenizer/ (vocab.json" in msg and "scheduler/" in msg
    assert check_pretrained_dir(sd_dir) == sd_dir


def test_adapted_input_channels_keep_the_pretrained_function(sd):
    base, adapted = sd.unet(), sd.unet(in_channels=4 + 1 + 4 + 3)
    assert adapted.in_channels == 12 and adapted.unet.config.in_channels == 12
    x, t = torch.randn(2, 4, 16, 16), torch.tensor([3, 700])
    with torch.no_grad():
        y = base(x, t)
        y2 = adapted(torch.cat([x, torch.randn(2, 8, 16, 16)], dim=1), t)  # extra inputs start with zero weights
    torch.testing.assert_close(y, y2, rtol=1e-4, atol=1e-5)


def test_controlnet_from_unet_starts_as_identity_and_checks_the_hint(sd):
    unet = sd.unet()
    cn = sd.controlnet(unet, conditioning_channels=4)
    torch.testing.assert_close(cn.controlnet.conv_in.weight, unet.unet.conv_in.weight)  # encoder copied
    den = ControlNetConditionedUNet(unet, cn)
    x, t = torch.randn(2, 4, 16, 16), torch.tensor([3, 700])
    with torch.no_grad():
        torch.testing.assert_close(den(x, t, torch.rand(2, 4, 32, 32)), unet(x, t))  # zero convolutions
    with pytest.raises(ValueError, match="hint must be"):
        den(x, t, torch.rand(2, 4, 16, 16))


def test_siamese_image_loss_never_trains_the_unet(sd):
    sd.gradient_checkpointing = True  # the frozen pass must also work with checkpointed UNets
    try:
        unet = sd.unet()
        cn = sd.controlnet(unet, 4)
    finally:
        sd.gradient_checkpointing = False
    net = DiffusersSiameseNetwork(unet, cn, sd.scheduler(), unet_mode="all")
    torch.manual_seed(0)
    with torch.no_grad():  # make the zero convolutions non-zero so the ControlNet matters
        for p in cn.controlnet.controlnet_down_blocks.parameters():
            p.normal_(0, 0.02)
        for p in cn.controlnet.controlnet_mid_block.parameters():
            p.normal_(0, 0.02)
    z, eps = torch.randn(2, 4, 16, 16), torch.randn(2, 4, 16, 16)
    t = torch.tensor([50, 600])
    out = net(z, eps, t, torch.rand(2, 4, 32, 32), torch.rand(2, 4, 32, 32), 0.5, torch.tensor([True, False]))
    assert out["pred_oa"].shape == (1, 4, 16, 16)
    (out["pred_image"] - eps).pow(2).mean().backward()
    assert all(p.grad is None or not p.grad.any() for p in net.unet.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.controlnet.parameters())
    net.zero_grad()
    out = net(z, eps, t, torch.rand(2, 4, 32, 32))
    (out["pred_mask"] - eps).pow(2).mean().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.unet.parameters())
    dec = DiffusersSiameseNetwork(sd.unet(), sd.controlnet(sd.unet(), 4), sd.scheduler(), unet_mode="decoder")
    trainable = {n for n, p in dec.unet.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("unet.up_blocks", "unet.conv_norm_out", "unet.conv_out")) for n in trainable)


def test_vae_codec_round_trip_and_latent_noise(sd):
    codec = sd.codec(image_channels=1, condition="pixel")
    x = torch.rand(3, 1, 32, 32) * 2 - 1
    z = codec.encode(x)
    assert z.shape == (3, 4, 16, 16) and codec.decode(z).shape == (3, 1, 32, 32)
    torch.testing.assert_close(z[:1], codec.encode(x[:1]))
    with pytest.raises(ValueError, match="multiple of 2"):
        codec.encode(torch.zeros(1, 1, 31, 32))
    noise = seeded_noise((1, 32, 32), [5, 6])
    lat = codec.latent_noise(noise)
    assert lat.shape == (2, 4, 16, 16)
    torch.testing.assert_close(lat[1:], codec.latent_noise(seeded_noise((1, 32, 32), [6])))  # per-sample seeds


def test_condition_modes(sd):
    cond = torch.cat([torch.rand(2, 4, 32, 32), torch.rand(2, 1, 32, 32) * 2 - 1, torch.ones(2, 1, 32, 32)], 1)
    codec = sd.codec(1, "inpaint")
    lat = codec.encode_condition(cond)
    assert lat.shape == (2, 1 + 4 + 4, 16, 16) and codec.condition_channels(6) == 9
    torch.testing.assert_close(lat[:, :1], torch.ones(2, 1, 16, 16))  # region first (SD inpainting layout)
    torch.testing.assert_close(lat[:, 1:5], codec.encode(cond[:, 4:5]))
    assert sd.codec(1, "latent").encode_condition(cond[:, :4]).shape == (2, 4, 16, 16)
    assert sd.codec(1, "pixel").encode_condition(cond[:, :4]).shape == (2, 4, 32, 32)

    prep = LatentDiffusionPrepareBatch(codec=sd.codec(1, "latent"), num_train_timesteps=1000)
    batch = {"image": torch.rand(2, 1, 32, 32), "cond": torch.rand(2, 4, 32, 32), "label": torch.zeros(2, 1, 32, 32)}
    images, target, _, kw = prep(batch, "cpu")
    assert images.shape == target.shape == kw["noise"].shape == (2, 4, 16, 16)
    assert kw["condition"].shape == (2, 4, 16, 16) and batch["image"].shape == (2, 1, 32, 32)


def test_latent_sampler_with_guiding_mask_keeps_the_known_image(sd):
    codec = sd.codec(1, "inpaint")
    unet = sd.unet(in_channels=4 + 1 + 4 + 2).eval()

    def denoiser(x, t, c):
        return unet(torch.cat([x, c], 1), t)

    known = torch.rand(2, 1, 32, 32) * 2 - 1
    fg = torch.zeros(2, 1, 32, 32)
    fg[:, :, 10:20, 12:22] = 1
    sched = sd.scheduler("DDIMScheduler")
    hook = DynamicGuidingMask(known, fg, sched, margin_fraction=0.2, min_margin=1.0, seeds=[1, 2])
    cond = torch.cat([torch.rand(2, 2, 32, 32), known, fg], 1)
    sampler = LatentSampler(codec, sched, num_inference_steps=2, guidance_scale=2.0)
    out = sampler(denoiser, cond, seeded_noise((1, 32, 32), [1, 2]), hooks=[hook])
    assert out.shape == (2, 1, 32, 32) and out.abs().max() <= 1
    outside = hook.region(-1) == 0
    torch.testing.assert_close(out[outside], known[outside])  # pasted back at pixel resolution
    assert isinstance(sampler, ConditionalSampler)


def test_text_guidance_keeps_the_mask_and_switches_the_prompt(sd):
    from monai_siamese.networks import TextGuidedDenoiser

    unet = sd.unet().eval()
    cn = sd.controlnet(unet, 4).eval()
    with torch.no_grad():
        for p in cn.controlnet.controlnet_down_blocks.parameters():
            p.normal_(0, 0.02)
    den = ControlNetConditionedUNet(unet, cn)
    x, t, hint = torch.randn(2, 4, 16, 16), torch.tensor([3, 700]), torch.rand(2, 4, 32, 32)
    with torch.no_grad():
        eps_p = den(x, t, hint)
        for m in (unet, cn):
            m.use_negative_prompt = True
        eps_n = den(x, t, hint)
        for m in (unet, cn):
            m.use_negative_prompt = False
        guided = TextGuidedDenoiser(den, 9.0)(x, t, hint)
        torch.testing.assert_close(guided, eps_n + 9.0 * (eps_p - eps_n))
        torch.testing.assert_close(TextGuidedDenoiser(den, 1.0)(x, t, hint), eps_p)
    assert not unet.use_negative_prompt and not torch.equal(eps_p, eps_n)
    assert "negative_embeds" not in unet.state_dict() and "prompt_embeds" in unet.state_dict()
