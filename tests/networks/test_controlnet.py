"""ControlNet conditioning: the UNet encoder/decoder split, hints at image and latent resolution, ControlNet
initialisation from the UNet encoder, pretrained-UNet loading and UNet training modes."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import ControlNet, DiffusionModelUNet

from monai_siamese.networks import (
    ControlNetConditionedUNet,
    SiameseDiffusionNetwork,
    UNetMode,
    hint_downsample_factor,
    init_controlnet_from_unet,
    load_pretrained_unet,
    save_weights,
    unet_decode,
    unet_encode,
)

ARCH = {
    "channels": (8, 16),
    "attention_levels": (False, True),
    "num_res_blocks": 1,
    "norm_num_groups": 8,
    "num_head_channels": 8,
}


def tiny_unet(in_channels: int = 1, spatial_dims: int = 2) -> DiffusionModelUNet:
    return DiffusionModelUNet(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=1, **ARCH)


def tiny_controlnet(hint_channels: int = 4, embedding=(8,), spatial_dims: int = 2) -> ControlNet:
    return ControlNet(
        spatial_dims=spatial_dims,
        in_channels=1,
        conditioning_embedding_in_channels=hint_channels,
        conditioning_embedding_num_channels=embedding,
        **ARCH,
    )


def randomise(*modules: torch.nn.Module, seed: int = 0) -> None:
    """Random weights everywhere (ControlNet's zero convolutions included) so that every path carries signal."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in modules:
            for p in m.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_encode_decode_equals_monai_forward(spatial_dims):
    torch.manual_seed(0)
    unet, cn = tiny_unet(spatial_dims=spatial_dims), tiny_controlnet(spatial_dims=spatial_dims)
    randomise(unet, cn)
    shape = (2, 1) + (16,) * spatial_dims
    x, t = torch.randn(shape), torch.tensor([3, 700])
    hint = torch.rand((2, 4) + (16,) * spatial_dims)
    down, mid = cn(x, t, controlnet_cond=hint)
    ref = unet(x, t, down_block_additional_residuals=down, mid_block_additional_residual=mid)
    ours = unet_decode(unet, unet_encode(unet, x, t), down, mid)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(unet_decode(unet, unet_encode(unet, x, t)), unet(x, t), rtol=0, atol=1e-6)


@pytest.mark.parametrize("embedding,hint_size", [((8,), 16), ((8, 16), 32), ((8, 8, 16), 64)])
def test_hint_at_image_or_latent_resolution(embedding, hint_size):
    """One hint-encoder level: the mask at the input's resolution (pixel space); n levels: 2^(n-1) times larger."""
    unet, cn = tiny_unet(), tiny_controlnet(embedding=embedding)
    randomise(unet, cn)
    assert hint_downsample_factor(cn) == hint_size // 16
    den = ControlNetConditionedUNet(unet, cn)
    x, t = torch.randn(2, 1, 16, 16), torch.tensor([10, 500])
    hint = torch.zeros(2, 4, hint_size, hint_size)
    hint[:, 1, : hint_size // 2] = 1
    hint[:, 0, hint_size // 2 :] = 1
    out = den(x, t, hint)
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert not torch.allclose(out, den(x, t, hint.flip(2)))  # the hint changes the prediction
    with pytest.raises(ValueError, match="hint encoder downsamples"):
        den(x, t, torch.zeros(2, 4, hint_size * 2, hint_size * 2))


def test_controlnet_initialised_from_unet_encoder():
    unet, cn = tiny_unet(), tiny_controlnet()
    randomise(unet, seed=1)
    keys = init_controlnet_from_unet(cn, unet)
    us, cs = unet.state_dict(), cn.state_dict()
    assert "conv_in.conv.weight" in keys and any(k.startswith("middle_block.") for k in keys)
    for k in keys:
        torch.testing.assert_close(cs[k], us[k], rtol=0, atol=0)
    assert not any(k.startswith(("up_blocks", "out")) for k in keys)
    assert all(float(v.abs().sum()) == 0 for k, v in cs.items() if k.startswith("controlnet_down_blocks"))
    other = ControlNet(
        spatial_dims=2,
        in_channels=1,
        channels=(8, 32),
        attention_levels=(False, True),
        num_res_blocks=1,
        norm_num_groups=8,
        num_head_channels=8,
        conditioning_embedding_in_channels=4,
        conditioning_embedding_num_channels=(8,),
    )
    with pytest.raises(ValueError, match="does not match the UNet encoder"):
        init_controlnet_from_unet(other, unet)


def test_pretrained_unet_from_seg_guided_and_unconditional(tmp_path):
    """A segmentation-guided UNet has image + mask input channels: its input conv keeps the image channels' slice."""
    seg = tiny_unet(in_channels=1 + 4)
    randomise(seg, seed=2)
    save_weights(seg, tmp_path / "seg.safetensors")
    unet = load_pretrained_unet(tiny_unet(), tmp_path / "seg.safetensors")
    s, u = seg.state_dict(), unet.state_dict()
    torch.testing.assert_close(u["conv_in.conv.weight"], s["conv_in.conv.weight"][:, :1], rtol=0, atol=0)
    for k in u:
        if k != "conv_in.conv.weight":
            torch.testing.assert_close(u[k], s[k], rtol=0, atol=0)

    plain = tiny_unet()
    randomise(plain, seed=3)
    torch.save({"ema": plain.state_dict(), "network": tiny_unet().state_dict()}, tmp_path / "ckpt.pt")
    unet = load_pretrained_unet(tiny_unet(), tmp_path / "ckpt.pt")
    for k, v in plain.state_dict().items():
        torch.testing.assert_close(unet.state_dict()[k], v, rtol=0, atol=0)

    wrong = DiffusionModelUNet(spatial_dims=2, in_channels=1, out_channels=1, **{**ARCH, "channels": (8, 32)})
    save_weights(wrong, tmp_path / "wrong.safetensors")
    with pytest.raises(RuntimeError, match="shape"):
        load_pretrained_unet(tiny_unet(), tmp_path / "wrong.safetensors")
    assert load_pretrained_unet(plain, None) is plain


@pytest.mark.parametrize("mode", list(UNetMode))
def test_unet_modes(mode):
    net = SiameseDiffusionNetwork(tiny_unet(), tiny_controlnet(), unet_mode=mode)
    trainable = {n for n, p in net.unet.named_parameters() if p.requires_grad}
    everything = {n for n, _ in net.unet.named_parameters()}
    decoder = {n for n in everything if n.startswith(("up_blocks.", "out."))}
    expected = {UNetMode.ALL: everything, UNetMode.DECODER: decoder, UNetMode.NONE: set()}[mode]
    assert trainable == expected and decoder
    assert all(p.requires_grad for p in net.controlnet.parameters())
