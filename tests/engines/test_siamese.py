"""Siamese-Diffusion objective: gradient flow of each term on tiny networks, online-augmentation gating, the image
weight ramp on the stock SupervisedTrainer (inferer + schedule handler) and equality with a deep-copying reference
step."""

from __future__ import annotations

import pytest
import torch
from helpers import load_script
from monai.engines import SupervisedTrainer
from monai.engines.utils import IterationEvents
from monai.networks.nets import ControlNet, DiffusionModelUNet
from monai.networks.schedulers import DDPMScheduler

from monai_siamese.diffusion import diffusion_target, predict_x0
from monai_siamese.engines import GradientClipHandler
from monai_siamese.engines.prepare_batch import ConditionalDiffusionPrepareBatch
from monai_siamese.engines.siamese import SiameseDiffusionLoss, SiameseScheduleHandler
from monai_siamese.inferers import SiameseDiffusionInferer, make_image_hint
from monai_siamese.networks import SiameseDiffusionNetwork

ARCH = {"channels": (8, 16), "attention_levels": (False, False), "num_res_blocks": 1, "norm_num_groups": 8}
C = 4  # mask classes = hint channels


def make_net(mode: str = "all", prediction_type: str = "epsilon", seed: int = 0) -> SiameseDiffusionNetwork:
    torch.manual_seed(seed)
    unet = DiffusionModelUNet(spatial_dims=2, in_channels=1, out_channels=1, **ARCH)
    cn = ControlNet(
        spatial_dims=2,
        in_channels=1,
        conditioning_embedding_in_channels=C,
        conditioning_embedding_num_channels=(8,),
        **ARCH,
    )
    net = SiameseDiffusionNetwork(unet, cn, DDPMScheduler(1000), prediction_type=prediction_type, unet_mode=mode)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # zero convolutions (ControlNet, UNet output) non-zero, so every path carries gradient
        for p in list(cn.parameters()) + list(unet.out.parameters()):
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    return net


def make_batch(t=(50, 150, 600, 900), seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    b = len(t)
    lab = torch.zeros(b, 16, 16, dtype=torch.long)
    lab[:, 4:12, 4:12] = 1
    lab[:, 6:10, 6:10] = 2
    lab[:, :, :3] = 3
    cond = torch.nn.functional.one_hot(lab, C).movedim(-1, 1).float()
    images = (lab[:, None].float() / 3 * 2 - 1) + 0.1 * torch.randn(b, 1, 16, 16, generator=g)
    return {"images": images, "cond": cond, "t": torch.tensor(t), "noise": torch.randn(b, 1, 16, 16, generator=g)}


def run(net, batch, w_i=1.0, oa=False, **weights):
    out = net(
        batch["images"],
        batch["noise"],
        batch["t"],
        batch["cond"],
        make_image_hint(batch["images"], C),
        w_i,
        (batch["t"] <= 200) if oa else None,
    )
    target = diffusion_target(net.scheduler, batch["images"], batch["noise"], batch["t"], net.prediction_type)
    return out, SiameseDiffusionLoss(**weights).terms(out, target)


def grads(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p)) for n, p in module.named_parameters()}


def total(g: dict[str, torch.Tensor]) -> float:
    return float(sum(v.abs().sum() for v in g.values()))


ONLY = {
    "mask": {"image_weight": 0, "nc_weight": 0, "oa_weight": 0},
    "img": {"mask_weight": 0, "nc_weight": 0, "oa_weight": 0},
    "nc": {"mask_weight": 0, "image_weight": 0, "oa_weight": 0},
}


@pytest.mark.parametrize("mode", ["all", "decoder"])
def test_image_loss_never_reaches_the_unet(mode):
    net = make_net(mode)
    _, terms = run(net, make_batch(), w_i=1.0, **ONLY["img"])
    terms["loss"].backward()
    assert float(terms["loss_img"].detach()) > 0
    for name, p in net.unet.named_parameters():
        assert p.grad is None or float(p.grad.abs().max()) == 0.0, name
    g = grads(net.controlnet)
    # through the image-hint pass: the hint encoder, the zero convolutions and the ControlNet trunk
    assert total({k: v for k, v in g.items() if k.startswith("controlnet_cond_embedding")}) > 0
    assert total({k: v for k, v in g.items() if k.startswith("controlnet_down_blocks")}) > 0
    assert total({k: v for k, v in g.items() if k.startswith("down_blocks")}) > 0


def test_mask_residual_inside_image_branch_is_detached():
    """With w_i = 0 the image branch only sees sg(mask residuals): L_img must not move the ControlNet at all."""
    net = make_net("all")
    _, terms = run(net, make_batch(), w_i=0.0, **ONLY["img"])
    terms["loss"].backward()
    assert float(terms["loss_img"].detach()) > 0
    assert total(grads(net.controlnet)) == 0.0 and total(grads(net.unet)) == 0.0


def test_mask_loss_trains_controlnet_and_the_chosen_unet_part():
    net = make_net("decoder")
    _, terms = run(net, make_batch(), **ONLY["mask"])
    terms["loss"].backward()
    g = grads(net.controlnet)
    assert all(float(v.abs().sum()) > 0 for k, v in g.items() if k.startswith(("controlnet_cond_embedding", "conv_in")))
    gu = grads(net.unet)
    assert total({k: v for k, v in gu.items() if k.startswith(("up_blocks", "out"))}) > 0
    assert total({k: v for k, v in gu.items() if k.startswith(("down_blocks", "middle_block", "time_embed"))}) == 0


def test_noise_consistency_does_not_flow_through_image_branch():
    """L_nc = ||eps_m - sg(eps_i)||²: its gradient equals that of ||eps_m - c||² with c the constant value of eps_i."""
    batch = make_batch()
    net = make_net("all")
    out, terms = run(net, batch, w_i=1.0, **ONLY["nc"])
    terms["loss"].backward()
    g_nc_cn, g_nc_unet = grads(net.controlnet), grads(net.unet)
    const = out["pred_image"].detach()
    net.zero_grad(set_to_none=True)
    x_t = net.scheduler.add_noise(batch["images"], batch["noise"], batch["t"])
    pred = net.mask_diffusion(x_t, batch["t"], batch["cond"])
    ((pred - const) ** 2).mean().backward()
    assert total(g_nc_cn) > 0
    for ref, ours in ((grads(net.controlnet), g_nc_cn), (grads(net.unet), g_nc_unet)):
        for k in ref:
            torch.testing.assert_close(ours[k], ref[k], rtol=1e-4, atol=1e-7)


def test_online_augmentation_term():
    batch = make_batch(t=(50, 150, 600, 900))
    net = make_net("all")
    out, terms = run(net, batch, w_i=0.5, oa=True)
    assert out["oa_index"].tolist() == [0, 1]
    # by hand: x0_hat from eps_i, x'_t = q(x0_hat, t, same eps), mask branch on sg(x'_t), summed over 2 of 4 samples
    i = torch.tensor([0, 1])
    with torch.no_grad():
        x0_hat = predict_x0(net.scheduler, out["x_t"][i], out["pred_image"][i], batch["t"][i])
        x_aug = net.scheduler.add_noise(x0_hat, batch["noise"][i], batch["t"][i])
        pred = net.mask_diffusion(x_aug, batch["t"][i], batch["cond"][i])
    expected = ((pred - batch["noise"][i]) ** 2).flatten(1).mean(1).sum() / 4
    torch.testing.assert_close(terms["loss_oa"], expected, rtol=1e-5, atol=1e-7)
    assert float(terms["loss_oa"].detach()) > 0
    _, none = run(net, make_batch(t=(201, 400, 600, 999)), oa=True)
    assert float(none["loss_oa"].detach()) == 0.0
    net.zero_grad(set_to_none=True)
    _, oa_only = run(net, batch, w_i=0.5, oa=True, mask_weight=0, image_weight=0, nc_weight=0)
    oa_only["loss"].backward()
    assert total(grads(net.unet)) > 0 and total(grads(net.controlnet)) > 0  # L_oa trains both (mode all)


@pytest.mark.parametrize("mode,ptype", [("decoder", "epsilon"), ("all", "v_prediction")])
def test_same_gradients_as_deep_copy_reference(mode, ptype):
    bench = load_script("benchmark_siamese_step")
    batch = make_batch(t=(50, 150, 600, 900))
    hint = make_image_hint(batch["images"], C)
    res = {}
    for name, fn in (("ours", bench.ours_forward), ("reference", bench.reference_forward)):
        net = make_net(mode, ptype)
        loss = fn(net, batch["images"], batch["noise"], batch["t"], batch["cond"], hint, 0.7, True)
        loss.backward()
        res[name] = (loss.detach(), grads(net))
    torch.testing.assert_close(res["ours"][0], res["reference"][0], rtol=1e-5, atol=1e-6)
    assert total(res["ours"][1]) > 0
    for k, v in res["reference"][1].items():
        torch.testing.assert_close(res["ours"][1][k], v, rtol=1e-4, atol=1e-6, msg=k)


class FixedTimesteps(ConditionalDiffusionPrepareBatch):
    def __init__(self, t, **kw):
        super().__init__(1000, condition_name="cond", **kw)
        self.t = torch.tensor(t)

    def get_timesteps(self, images):
        return self.t.to(images.device)


def _trainer(net, t, max_steps=30, loss=None, **kw):
    b = make_batch(t=t)
    data = [{"image": b["images"], "cond": b["cond"]}]
    loss = loss if loss is not None else SiameseDiffusionLoss()
    inferer = SiameseDiffusionInferer(image_branch=True)
    schedule = SiameseScheduleHandler(inferer, loss, max_steps=max_steps)
    trainer = SupervisedTrainer(
        device="cpu",
        max_epochs=1,
        train_data_loader=data,
        network=net,
        optimizer=torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.0),
        loss_function=loss,
        inferer=inferer,
        epoch_length=1,
        prepare_batch=FixedTimesteps(t),
        train_handlers=[schedule],
        decollate=False,
        **kw,
    )
    return trainer, data[0], schedule


def _step(trainer, schedule, batch, iteration):
    trainer.state.iteration = iteration
    schedule.schedule(trainer)
    out = trainer._iteration(trainer, batch)
    trainer.state.output = out
    schedule.report(trainer)
    return {k: (float(v) if isinstance(v, torch.Tensor) and v.ndim == 0 else v) for k, v in out.items()}


def test_schedule_gates_online_augmentation_and_ramps_image_weight():
    net = make_net("decoder")
    trainer, batch, schedule = _trainer(net, t=(10, 20, 300, 900))
    outputs = {}
    for it in (1, 10, 11, 12, 30):  # oa_start 1/3 of 30 steps: global_step > 10, i.e. iteration >= 12
        outputs[it] = _step(trainer, schedule, batch, it)
    assert outputs[1]["image_weight"] == 0.0 and outputs[30]["image_weight"] == pytest.approx(29 / 30)
    assert outputs[11]["image_weight"] == pytest.approx(10 / 30)
    for it in (1, 10, 11):
        assert outputs[it]["loss_oa"] == 0.0 and outputs[it]["oa_samples"] == 0
    assert outputs[12]["loss_oa"] > 0 and outputs[12]["oa_samples"] == 2
    for k in ("loss", "loss_mask", "loss_img", "loss_nc"):
        assert outputs[30][k] > 0
    # every sample with t > 200: no augmentation even late in training
    late, batch, schedule = _trainer(make_net("decoder"), t=(201, 500, 700, 999))
    out = _step(late, schedule, batch, 30)
    assert out["loss_oa"] == 0.0 and out["oa_samples"] == 0
    # oa_weight 0 turns the term (and its pass) off
    off, batch, schedule = _trainer(make_net("decoder"), t=(10, 20, 300, 900), loss=SiameseDiffusionLoss(oa_weight=0))
    out = _step(off, schedule, batch, 30)
    assert out["loss_oa"] == 0.0 and out["oa_samples"] == 0


def test_stock_trainer_runs_handlers_and_updates_weights():
    net = make_net("decoder")
    b = make_batch()
    data = [{"image": b["images"], "cond": b["cond"]}] * 3
    before = {k: v.clone() for k, v in net.state_dict().items()}
    clip = GradientClipHandler(max_norm=0.5)
    fired = []
    loss, inferer = SiameseDiffusionLoss(), SiameseDiffusionInferer()
    trainer = SupervisedTrainer(
        device="cpu",
        max_epochs=1,
        train_data_loader=data,
        network=net,
        optimizer=torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=1e-3),
        loss_function=loss,
        inferer=inferer,
        prepare_batch=ConditionalDiffusionPrepareBatch(1000, condition_name="cond", scheduler=net.scheduler),
        train_handlers=[clip, SiameseScheduleHandler(inferer, loss)],
        decollate=False,
    )
    trainer.add_event_handler(IterationEvents.BACKWARD_COMPLETED, lambda e: fired.append(e.state.iteration))
    trainer.run()
    assert fired == [1, 2, 3] and float(trainer.state.grad_norm) > 0
    assert trainer.state.output["image_weight"] == pytest.approx(2 / 3)
    after = net.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(k.startswith("controlnet.") for k in changed) and any(k.startswith("unet.up_blocks") for k in changed)
    assert not any(k.startswith(("unet.down_blocks", "unet.middle_block", "unet.conv_in")) for k in changed)


def test_image_hint_channels():
    img = torch.linspace(-1, 1, 16).reshape(1, 1, 4, 4)
    rep = make_image_hint(img, 4)
    assert rep.shape == (1, 4, 4, 4) and torch.equal(rep[:, 0], rep[:, 3]) and float(rep.min()) == 0.0
    pad = make_image_hint(img, 3, "pad")
    assert pad.shape == (1, 3, 4, 4) and float(pad[:, 1:].abs().sum()) == 0.0
    assert make_image_hint(img, 2, size=(8, 8)).shape == (1, 2, 8, 8)
