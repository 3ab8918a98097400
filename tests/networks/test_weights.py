"""Weight loading: safetensors/pt round trip, DDP prefixes, input-channel adaptation for fine-tuning."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import DiffusionModelUNet

from monai_siamese.networks import load_pretrained, load_weights, save_weights


def _unet(in_channels):
    torch.manual_seed(0)
    return DiffusionModelUNet(
        spatial_dims=2,
        in_channels=in_channels,
        out_channels=1,
        channels=(8, 16),
        attention_levels=(False, False),
        num_res_blocks=1,
        norm_num_groups=8,
    )


@pytest.mark.parametrize("ext", [".safetensors", ".pt"])
def test_round_trip(tmp_path, ext):
    a, b = _unet(3), _unet(3)
    for p in b.parameters():
        p.data.add_(1.0)
    save_weights(a, tmp_path / f"w{ext}")
    load_weights(b, tmp_path / f"w{ext}")
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb)


def test_checkpoint_dict_and_module_prefix(tmp_path):
    a = _unet(3)
    state = {"network": {f"module.{k}": v for k, v in a.state_dict().items()}, "optimizer": {"state": {}}}
    torch.save(state, tmp_path / "ckpt.pt")
    b = load_weights(_unet(3), tmp_path / "ckpt.pt", key="network")
    torch.testing.assert_close(next(b.parameters()), next(a.parameters()))


def test_adapted_channels_keep_the_pretrained_function(tmp_path):
    """A seg-guided UNet (image + 4 mask channels) loaded into an inpainting UNet (+1 masked-image channel):
    the new channel starts at zero weight, so the fine-tuned model starts as the pretrained one."""
    base = _unet(5).eval()
    save_weights(base, tmp_path / "base.safetensors")
    with pytest.raises(RuntimeError, match="do not fit"):
        load_weights(_unet(6), tmp_path / "base.safetensors")
    ft = load_pretrained(_unet(6), tmp_path / "base.safetensors").eval()
    x, t = torch.randn(2, 5, 16, 16), torch.tensor([10, 500])
    extra = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(ft(torch.cat([x, extra], 1), t), base(x, t))
    with pytest.raises(FileNotFoundError, match="Train the base model first"):
        load_pretrained(_unet(6), tmp_path / "missing.safetensors")


def test_truncated_or_foreign_weights_are_one_line_errors_naming_the_file(tmp_path):
    """A truncated ``model.safetensors`` (a copy cut short) and a file that is not safetensors at all: a
    WeightsError naming the file, never a reader's traceback; settings are stored and read back."""
    import pytest
    from torch import nn

    from monai_siamese.errors import WeightsError
    from monai_siamese.networks import load_weights, read_settings, save_weights

    net = nn.Linear(4, 2)
    path = tmp_path / "model.safetensors"
    save_weights(net, path, settings={"prediction": "epsilon", "spatial_size": [64, 64]})
    assert read_settings(path) == {"prediction": "epsilon", "spatial_size": [64, 64]}
    load_weights(nn.Linear(4, 2), path, expected={"prediction": "epsilon", "other": 1})  # unknown keys not compared
    with pytest.raises(WeightsError, match=r"prediction \(config \"v_prediction\", weights \"epsilon\"\)"):
        load_weights(nn.Linear(4, 2), path, expected={"prediction": "v_prediction"})
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(path.read_bytes()[:40])
    with pytest.raises(WeightsError, match="cut.safetensors: not a readable safetensors file"):
        load_weights(nn.Linear(4, 2), cut)
    other = tmp_path / "other.safetensors"
    other.write_text("not weights")
    with pytest.raises(WeightsError, match="other.safetensors"):
        load_weights(nn.Linear(4, 2), other)
