"""ContiguousAdamW: torch's AdamW update over packed parameters, torch's checkpoint layout, repair of detached views;
the EMA over packed buffers."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from torch import nn

from monai_siamese.engines import (
    ContiguousAdamW,
    ForeachEMAHandler,
    GradientClipHandler,
    fused_adamw_available,
    pack_parameters,
    packed_base,
)
from monai_siamese.networks.weights import load_weights, save_weights

OPTIONS = [{}, {"foreach": True}, {"foreach": False}]


def _net(frozen: bool = False) -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 8, 3), nn.GroupNorm(2, 8), nn.SiLU(), nn.Conv2d(8, 2, 3))
    if frozen:
        net[1].requires_grad_(False)
    return net


def _steps(pairs, n: int, x: torch.Tensor) -> None:
    for _ in range(n):
        for net, opt in pairs:
            opt.zero_grad(set_to_none=True)
            net(x).pow(2).mean().backward()
            opt.step()


def _same(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


@pytest.mark.parametrize("options", OPTIONS + [{"fused": True}])
def test_update_is_torch_adamw_bit_for_bit(options):
    if options.get("fused") and not fused_adamw_available("cpu"):
        pytest.skip("this torch has no fused CPU AdamW")
    ref, ours = _net(), _net()
    kw = {"lr": 1e-2, "weight_decay": 0.05, **options}
    pairs = [(ref, torch.optim.AdamW(ref.parameters(), **kw)), (ours, ContiguousAdamW(ours.parameters(), **kw))]
    base = packed_base([p.detach() for p in ours.parameters()])
    assert base is not None and base.numel() == sum(p.numel() for p in ours.parameters())
    _steps(pairs, 4, torch.randn(4, 2, 9, 9))
    assert _same(ref, ours) and not _same(ref, _net())  # trained, and identically
    assert packed_base([p.detach() for p in ours.parameters()]) is not None  # still packed after the steps


def test_not_contiguous_is_plain_adamw():
    net = _net()
    opt = ContiguousAdamW(net.parameters(), contiguous=False, lr=1e-2)
    assert packed_base([p.detach() for p in net.parameters()]) is None
    assert opt.param_groups[0]["params"] == list(net.parameters())


@pytest.mark.parametrize("frozen", [False, True])
def test_checkpoints_move_between_torch_adamw_and_ours(frozen):
    """Both directions, through torch.save; with frozen parameters between packed ones the numbering is still the
    user's order of parameters."""
    x = torch.randn(4, 2, 9, 9)
    ref, ours = _net(frozen), _net(frozen)
    kw = {"lr": 1e-2, "weight_decay": 0.05}
    o_ref, o_ours = torch.optim.AdamW(ref.parameters(), **kw), ContiguousAdamW(ours.parameters(), **kw)
    _steps([(ref, o_ref), (ours, o_ours)], 3, x)
    s_ref, s_ours = o_ref.state_dict(), o_ours.state_dict()
    assert s_ours["param_groups"][0]["params"] == s_ref["param_groups"][0]["params"]  # per-parameter layout
    assert set(s_ours["param_groups"][0]) == set(s_ref["param_groups"][0])
    for i, st in s_ref["state"].items():
        assert set(st) == set(s_ours["state"][i]) and all(torch.equal(v, s_ours["state"][i][k]) for k, v in st.items())

    def saved(obj):  # through torch.save, as a checkpoint goes
        buf = io.BytesIO()
        torch.save(obj, buf)
        buf.seek(0)
        return torch.load(buf, weights_only=True)

    into_plain, into_ours = _net(frozen), _net(frozen)
    into_plain.load_state_dict(saved(ours.state_dict()))
    into_ours.load_state_dict(saved(ref.state_dict()))
    o_plain, o_into = torch.optim.AdamW(into_plain.parameters(), **kw), ContiguousAdamW(into_ours.parameters(), **kw)
    o_plain.load_state_dict(saved(s_ours))
    o_into.load_state_dict(saved(s_ref))
    _steps([(ref, o_ref), (ours, o_ours), (into_plain, o_plain), (into_ours, o_into)], 2, x)
    assert _same(ref, ours) and _same(ref, into_plain) and _same(ref, into_ours)


def test_detached_gradients_and_replaced_weights_are_reattached():
    x = torch.randn(4, 2, 9, 9)
    ref, ours = _net(), _net()
    o_ref, o_ours = torch.optim.AdamW(ref.parameters(), lr=1e-2), ContiguousAdamW(ours.parameters(), lr=1e-2)
    _steps([(ref, o_ref), (ours, o_ours)], 1, x)
    for net, opt in ((ref, o_ref), (ours, o_ours)):  # a hand-written loop around the optimizer
        net.zero_grad(set_to_none=True)  # the views dropped: backward makes new gradient tensors
        net[0].weight.data = net[0].weight.data.clone() * 0.5  # a weight replaced, not copied into
        net(x).pow(2).mean().backward()
        opt.step()
    assert _same(ref, ours)
    assert packed_base([p.detach() for p in ours.parameters()]) is not None  # views again
    _steps([(ref, o_ref), (ours, o_ours)], 2, x)
    assert _same(ref, ours)


def test_packed_gradients_hold_every_gradient_and_clipping_scales_them_as_torch():
    """``packed_gradients`` copies a detached gradient back first, so scaling the buffers scales every parameter's
    gradient; ``GradientClipHandler`` then clips bit for bit as ``clip_grad_norm_`` (detached gradients included)."""
    from ignite.engine import Engine

    x = torch.randn(4, 2, 9, 9)
    ref, ours = _net(frozen=True), _net(frozen=True)
    o_ref, o_ours = torch.optim.AdamW(ref.parameters(), lr=1e-2), ContiguousAdamW(ours.parameters(), lr=1e-2)
    assert ContiguousAdamW(_net().parameters(), contiguous=False).packed_gradients() is None
    for net, opt in ((ref, o_ref), (ours, o_ours)):
        opt.zero_grad()
        net.zero_grad(set_to_none=True)  # ours: the views dropped, backward makes new tensors
        net(x).pow(2).mean().backward()
    assert packed_base([p.grad for p in ours.parameters() if p.requires_grad]) is None
    flat = o_ours.packed_gradients()
    assert len(flat) == 1 and packed_base([p.grad for p in ours.parameters() if p.requires_grad]) is not None
    assert all(torch.equal(a.grad, b.grad) for a, b in zip(ref.parameters(), ours.parameters()) if a.requires_grad)
    engine = Engine(lambda e, b: None)
    engine.optimizer = o_ours
    GradientClipHandler(max_norm=1e-3)(engine)
    ref_norm = torch.nn.utils.clip_grad_norm_([p for p in ref.parameters() if p.requires_grad], 1e-3)
    assert float(ref_norm) > 1e-3 and torch.equal(engine.state.grad_norm, ref_norm)  # it clipped
    assert all(torch.equal(a.grad, b.grad) for a, b in zip(ref.parameters(), ours.parameters()) if a.requires_grad)
    ours[1].weight.grad = torch.ones_like(ours[1].weight)  # a gradient outside the buffers: per parameter instead
    assert o_ours.packed_gradients() is None


def test_frozen_parameters_stay_out_of_the_buffer_and_unchanged():
    x = torch.randn(4, 2, 9, 9)
    ref, ours = _net(frozen=True), _net(frozen=True)
    before = [p.clone() for p in ours[1].parameters()]
    o_ref = torch.optim.AdamW(ref.parameters(), lr=1e-2, weight_decay=0.5)
    o_ours = ContiguousAdamW(ours.parameters(), lr=1e-2, weight_decay=0.5)
    _steps([(ref, o_ref), (ours, o_ours)], 3, x)
    assert _same(ref, ours)
    assert all(torch.equal(a, b) for a, b in zip(before, ours[1].parameters()))  # no weight decay on them
    assert len(o_ours.param_groups[0]["params"]) == 1 + 2  # the packed buffer and the two loose frozen tensors


def test_packed_ema_equals_the_foreach_ema():
    from ignite.engine import Engine

    nets = [_net(), _net()]
    opts = [torch.optim.AdamW(nets[0].parameters(), lr=1e-2), ContiguousAdamW(nets[1].parameters(), lr=1e-2)]
    emas = [ForeachEMAHandler(n, 0.05, 0.5, 3) for n in nets]
    data = [torch.randn(2, 2, 9, 9, generator=torch.Generator().manual_seed(i)) for i in range(5)]
    engines = []
    for net, opt, ema in zip(nets, opts, emas):

        def step(engine, batch, net=net, opt=opt):
            opt.zero_grad(set_to_none=True)
            net(batch).pow(2).mean().backward()
            opt.step()

        engine = Engine(step)
        ema.attach(engine)
        engine.run(data, max_epochs=2)
        engines.append(engine)
    assert emas[0]._packed is None and emas[1]._packed is not None  # the packed path was taken
    assert packed_base([p.detach() for p in emas[1].ema_model.parameters()]) is not None
    assert _same(emas[0].ema_model, emas[1].ema_model) and not _same(emas[1].ema_model, nets[1])
    for ema, engine in zip(emas, engines):  # an EMA weight replaced by assignment: the per-tensor update takes over
        ema.ema_model[0].weight.data = ema.ema_model[0].weight.data.clone()
        engine.run(data, max_epochs=3)
    assert _same(emas[0].ema_model, emas[1].ema_model) and not _same(emas[1].ema_model, nets[1])


def test_packed_weights_save_and_load(tmp_path):
    net = _net()
    pack_parameters(list(net.parameters()))
    for name in ("m.safetensors", "m.pt"):
        save_weights(net, tmp_path / name)
        other = nn.Sequential(nn.Conv2d(2, 8, 3), nn.GroupNorm(2, 8), nn.SiLU(), nn.Conv2d(8, 2, 3))
        load_weights(other, tmp_path / name)
        assert _same(net, other)
    clone = copy.deepcopy(net)
    assert _same(net, clone)


def test_param_groups_look_like_adamw_ones():
    net = _net()
    opt = ContiguousAdamW([{"params": net[0].parameters()}, {"params": net[3].parameters(), "lr": 0.5}], lr=1e-2)
    ref = torch.optim.AdamW([{"params": _net()[0].parameters()}, {"params": _net()[3].parameters(), "lr": 0.5}])
    assert [set(g) for g in opt.param_groups] == [set(g) for g in ref.param_groups]
    assert [g["lr"] for g in opt.param_groups] == [1e-2, 0.5] and len(repr(opt)) < 2 * len(repr(ref))


def test_training_with_clipping_and_ema_is_bit_identical_to_torch_adamw():
    """The bundles' algorithm (gradient-norm clipping that clips, AdamW, EMA) over packed parameters gives torch's
    trajectory bit for bit: the clipping norm is taken per parameter as given, not over the packed buffer (which
    rounds differently)."""
    from ignite.engine import Engine

    def deep():
        torch.manual_seed(0)
        return nn.Sequential(*[nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.GroupNorm(2, 4)) for _ in range(12)])

    data = [torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(i)) for i in range(6)]
    runs = []
    for cls in (torch.optim.AdamW, ContiguousAdamW):
        net = deep()
        opt = cls(net.parameters(), lr=1e-2, weight_decay=0.05)
        clip, ema, norms = GradientClipHandler(max_norm=0.02), ForeachEMAHandler(net, 0.05, 0.5, 3), []

        def step(engine, batch, net=net, opt=opt, clip=clip, norms=norms):
            opt.zero_grad(set_to_none=True)
            net(batch).pow(2).mean().backward()
            clip(engine)
            norms.append(float(engine.state.grad_norm))
            opt.step()

        engine = Engine(step)
        engine.optimizer = opt
        ema.attach(engine)
        engine.run(data, max_epochs=3)
        runs.append((net, ema.ema_model, norms))
    assert sum(n > 0.02 for n in runs[0][2]) >= 3  # it clipped
    assert runs[0][2] == runs[1][2]
    assert _same(runs[0][0], runs[1][0]) and _same(runs[0][1], runs[1][1])
