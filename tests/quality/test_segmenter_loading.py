"""Loading the segmentation bundle's network by path, predictions at any input size, pooled encoder features."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import BUNDLES
from monai.networks.nets import SegResNet, UNet

from monai_siamese.networks import save_weights
from monai_siamese.quality import (
    SPEC_FILE,
    default_feature_layers,
    encoder_features,
    load_segmenter,
    save_segmenter_spec,
)

BUNDLE = BUNDLES / "segmentation"
TINY = {
    "spatial_size": [32, 32],
    "network_def#channels": [8, 16, 32],
    "network_def#strides": [2, 2],
    "network_def#num_res_units": 0,
}


def _tiny_unet() -> UNet:
    torch.manual_seed(0)
    return UNet(2, 1, 4, (8, 16, 32), (2, 2), num_res_units=0)


def test_default_feature_layers_are_the_deepest_encoder_stage():
    unet = _tiny_unet()
    (name,) = default_feature_layers(unet)
    bottleneck = dict(unet.named_modules())[name]
    x = torch.randn(2, 1, 32, 32)
    seen = {}
    bottleneck.register_forward_hook(lambda m, i, o: seen.update(shape=o.shape))
    unet(x)
    assert seen["shape"] == (2, 32, 8, 8)  # 32 channels at 1/4 resolution: the bottom of a 2-stride UNet
    seg = SegResNet(2, 8, 1, 4)
    assert default_feature_layers(seg) == ["down_layers.3"]
    with pytest.raises(ValueError, match="pass layers"):
        default_feature_layers(torch.nn.Conv2d(1, 1, 3))


def test_encoder_features_pooling_and_batching():
    unet = _tiny_unet()
    x = torch.randn(5, 1, 32, 32)
    f = encoder_features(unet, x, batch_size=2)
    assert f.shape == (5, 32)
    assert torch.allclose(f, encoder_features(unet, x, batch_size=5), atol=1e-5)
    assert encoder_features(unet, x, pool="meanmax").shape == (5, 64)
    assert not torch.allclose(f[0], f[1])
    assert unet.training  # the network's mode is restored


def test_load_segmenter_from_bundle_folder_and_from_weights_file(tmp_path):
    net = _tiny_unet()
    weights = tmp_path / "models" / "model_final.pt"
    save_weights(net, weights)
    seg = load_segmenter(BUNDLE, overrides=TINY, weights=weights, device="cpu")
    assert seg.settings.spatial_size == (32, 32) and seg.num_classes == 4 and seg.settings.preset == "mr"
    x = torch.rand(3, 1, 32, 32) * 2 - 1
    net.eval()
    with torch.no_grad():
        expected = net(x).argmax(1, keepdim=True)
    assert torch.equal(seg.predict(x), expected)
    # by path: a segmenter.json beside the weights says how to rebuild the network
    spec = save_segmenter_spec(tmp_path / "models", BUNDLE, ["train.json"], TINY, weights="model_final.pt")
    assert json.loads(open(spec).read())["overrides"]["network_def#channels"] == [8, 16, 32]
    for source in (weights, tmp_path / "models"):
        by_path = load_segmenter(source, device="cpu")
        assert torch.equal(by_path.predict(x), expected)
        assert torch.allclose(by_path.features(x), encoder_features(net, x), atol=1e-5)
    # weights moved to another machine, whose checkout is elsewhere: this installation's bundle of the same name
    moved = json.loads(open(spec).read())
    moved["bundle"] = str(tmp_path / "old_checkout" / "bundles" / "segmentation")
    open(spec, "w").write(json.dumps(moved))
    assert torch.equal(load_segmenter(tmp_path / "models", device="cpu").predict(x), expected)
    # other input sizes are resized to the network and back
    assert by_path.predict(torch.rand(2, 1, 48, 48) * 2 - 1).shape == (2, 1, 48, 48)
    with pytest.raises(FileNotFoundError, match=SPEC_FILE):
        load_segmenter(tmp_path / "elsewhere.pt")


def test_load_segmenter_rejects_weights_of_another_network(tmp_path):
    save_weights(UNet(2, 1, 4, (8, 16), (2,), num_res_units=0), tmp_path / "model.pt")
    with pytest.raises(RuntimeError, match="size mismatch|do not match"):
        load_segmenter(BUNDLE, overrides=TINY, weights=tmp_path / "model.pt", device="cpu")
