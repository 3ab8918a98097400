"""The engine-overhead fixes change no number: per-item re-seeding reusing generators gives the transforms' states of
``set_random_state``, the foreach EMA equals ignite's ``EMAHandler``, and a bundle run killed and resumed still ends
bit-identical to an uninterrupted one."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from monai.transforms import Compose, RandFlipd, Randomizable

from monai_siamese.data.sampling import SeededDataset, reseed
from monai_siamese.transforms import RandConditionDropoutd, RandMaskAblationd


class _Draw(Randomizable):
    def randomize(self, data=None) -> None:
        self.value = self.R.normal()  # normal(): exercises the cached-gauss part of the state

    def __call__(self, data):
        self.randomize()
        return {**data, "draws": data.get("draws", []) + [self.value, self.R.randint(1000)]}


def _tree():
    inner = Compose([_Draw(), RandFlipd("x", prob=0.5)])
    return Compose(
        [
            _Draw(),
            inner,
            RandMaskAblationd("cond", num_classes=4, prob=0.5),
            RandConditionDropoutd("cond", prob=0.3),
            _Draw(),
        ]
    )


def test_reseed_matches_set_random_state():
    a, b = _tree(), _tree()
    owned: dict = {}
    for seed in [0, 1, 2**32 - 1, 12345, 0, 7]:
        a.set_random_state(seed=seed)
        reseed(b, seed, owned)
        for ta, tb in zip(_flatten(a), _flatten(b)):
            sa, sb = ta.R.get_state(), tb.R.get_state()
            assert np.array_equal(sa[1], sb[1]) and sa[2:] == sb[2:]
        item = {"x": torch.rand(1, 8, 8), "cond": torch.nn.functional.one_hot(torch.randint(0, 4, (8, 8)), 4)}
        item["cond"] = item["cond"].permute(2, 0, 1).float()
        oa, ob = a(copy.deepcopy(item)), b(copy.deepcopy(item))
        assert oa["draws"] == ob["draws"] and torch.equal(oa["cond"], ob["cond"]) and torch.equal(oa["x"], ob["x"])
    # generators are reused, and never the class-level default one
    assert all(t.R is owned[id(t)] for t in _flatten(b) if type(t).set_random_state is Randomizable.set_random_state)
    assert Randomizable.R is not b.transforms[0].R


def _flatten(t):
    out = [t]
    for m in getattr(t, "transforms", []):
        out += _flatten(m) if isinstance(m, Randomizable) else []
    return out


def test_seeded_dataset_items_are_pure_functions_of_their_seed():
    data = [{"cond": torch.eye(4)[torch.randint(0, 4, (8, 8))].permute(2, 0, 1)} for _ in range(3)]
    ds = SeededDataset(data, Compose([RandMaskAblationd("cond", num_classes=4, prob=0.5)]))
    first = [ds[(i % 3, 100 + i)]["cond"] for i in range(9)]
    again = [ds[(i % 3, 100 + i)]["cond"] for i in reversed(range(9))][::-1]
    assert all(torch.equal(x, y) for x, y in zip(first, again))


def test_foreach_ema_matches_ignite_ema():
    from ignite.engine import Engine
    from ignite.handlers import EMAHandler

    from monai_siamese.engines import ForeachEMAHandler

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Linear(6, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    handlers = [EMAHandler(model, 0.01, 0.5, 5), ForeachEMAHandler(model, 0.01, 0.5, 5)]
    sa_init = {k: v.clone() for k, v in handlers[0].ema_model.state_dict().items()}

    def step(engine, batch):
        opt.zero_grad()
        model(batch).pow(2).mean().backward()
        opt.step()

    engines = []
    for h in handlers:  # the same model trajectory for both (the model is re-seeded per run)
        torch.manual_seed(1)
        for p in model.parameters():
            torch.nn.init.normal_(p)
        e = Engine(step)
        h.attach(e)
        e.run([torch.randn(2, 2, 8, 8, generator=torch.Generator().manual_seed(i)) for i in range(7)], max_epochs=2)
        engines.append(e)
    sa, sb = handlers[0].ema_model.state_dict(), handlers[1].ema_model.state_dict()
    # the same average written as a lerp: equal up to float rounding (integer buffers copied exactly)
    assert all(torch.allclose(sa[k].float(), sb[k].float(), rtol=1e-5, atol=1e-6) for k in sa)
    assert any(not torch.equal(sa[k], sa_init[k]) for k in sa if sa[k].is_floating_point())


@pytest.mark.parametrize("method", ["seg_guided_diffusion", "siamese_diffusion"])
def test_killed_and_resumed_run_is_bit_identical(tmp_path, demo_dir, method):
    from helpers import bundle_workflow
    from ignite.engine import Events

    def workflow(folder):
        over = {
            "dataset_dir": demo_dir,
            "ckpt_dir": str(folder / "models"),
            "log_dir": str(folder / "logs"),
            "sample_dir": str(folder / "samples"),
            "num_iterations": 6,
            "epoch_length": 2,
            "checkpoint_interval": 2,
            "sample_interval": 0,
        }
        return bundle_workflow(method, ["train.json", "tiny.json"], **over)

    wf = workflow(tmp_path / "a")
    wf.run()
    full = {k: v.clone() for k, v in wf.parser.get_parsed_content("network").state_dict().items()}
    ema_full = {k: v.clone() for k, v in wf.parser.get_parsed_content("ema").ema_model.state_dict().items()}

    wf = workflow(tmp_path / "b")
    trainer = wf.parser.get_parsed_content("train#trainer")

    @trainer.on(Events.ITERATION_COMPLETED(once=3))
    def _crash(engine):
        raise KeyboardInterrupt("simulated kill")

    with pytest.raises(BaseException, match="simulated kill"):
        wf.run()
    wf = workflow(tmp_path / "b")
    wf.run()
    resumed = wf.parser.get_parsed_content("network").state_dict()
    ema = wf.parser.get_parsed_content("ema").ema_model.state_dict()
    assert all(torch.equal(full[k], resumed[k]) for k in full)
    assert all(torch.equal(ema_full[k], ema[k]) for k in ema_full)


def test_cpu_adamw_implementations_agree_with_the_default(demo_dir):
    """The bundles' AdamW runs fused on the CPU where torch has the kernel (one kernel over every parameter), else
    ``foreach`` (one C++ loop instead of a Python loop over the parameters). ``foreach`` gives the default's updates
    bit for bit; fused gives them up to float rounding (each step checked from the same weights and gradients, as
    rounding differences grow over a training run like any change of kernel)."""
    import copy

    from monai.networks.nets import DiffusionModelUNet

    from monai_siamese.engines import fused_adamw_available

    def make():
        torch.manual_seed(0)
        return DiffusionModelUNet(
            2, 5, 1, channels=(8, 16), attention_levels=(False, False), num_res_blocks=1, norm_num_groups=8
        )

    kinds = {"single": {"foreach": False}, "foreach": {"foreach": True}}
    if fused_adamw_available("cpu"):
        kinds["fused"] = {"fused": True}
    nets = {k: make() for k in kinds}
    opts = {k: torch.optim.AdamW(nets[k].parameters(), lr=5e-4, weight_decay=0.01, **kw) for k, kw in kinds.items()}
    gen = torch.Generator().manual_seed(0)
    for _ in range(6):
        x, t = torch.randn(2, 5, 16, 16, generator=gen), torch.randint(0, 1000, (2,), generator=gen)
        if "fused" in nets:  # fused takes the same step as single-tensor: from its weights and moments
            nets["fused"].load_state_dict(nets["single"].state_dict())
            # a copy: load_state_dict keeps the given moment tensors, which the next step updates in place
            opts["fused"].load_state_dict(copy.deepcopy(opts["single"].state_dict()))
        for k, n in nets.items():
            opts[k].zero_grad()
            n(x, t).pow(2).mean().backward()
            opts[k].step()
        assert all(torch.equal(a, b) for a, b in zip(nets["single"].parameters(), nets["foreach"].parameters()))
        if "fused" in nets:
            # the update is lr-sized (5e-4) against a tolerance of 1e-7: a fused step that did nothing would fail
            for a, b in zip(nets["single"].parameters(), nets["fused"].parameters()):
                torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-7)
            state_ref, state_fused = opts["single"].state, opts["fused"].state
            for a, b in zip(nets["single"].parameters(), nets["fused"].parameters()):
                for m in ("exp_avg", "exp_avg_sq"):
                    torch.testing.assert_close(state_fused[b][m], state_ref[a][m], rtol=1e-5, atol=1e-12)
    from monai_siamese.bundles import read_config

    for method in ("seg_guided_diffusion", "siamese_diffusion", "meddiff_ft", "segmentation"):
        parser = read_config(method, ["train.json"], {"device": "$torch.device('cpu')"})
        fused = parser.get_parsed_content("fused_adamw")
        assert fused == fused_adamw_available("cpu")
        assert parser.get_parsed_content("optimizer#fused") == fused
        assert parser.get_parsed_content("optimizer#foreach") is (None if fused else True)


@pytest.mark.parametrize("max_norm", [1e-3, 1e3])  # clipping and not clipping
def test_gradient_clip_handler_equals_stock_clip(max_norm):
    from types import SimpleNamespace

    from monai_siamese.engines import GradientClipHandler

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.ReLU(), torch.nn.Linear(7, 2))
    net[0].bias.requires_grad_(False)  # a parameter without a gradient is skipped
    net(torch.randn(4, 5)).square().sum().backward()
    ref = [p.grad.clone() for p in net.parameters() if p.grad is not None]
    ref_norm = torch.stack([g.norm() for g in ref]).norm()
    stock = [torch.nn.Parameter(torch.zeros_like(g)) for g in ref]
    for p, g in zip(stock, ref):
        p.grad = g.clone()
    torch.nn.utils.clip_grad_norm_(stock, max_norm)
    engine = SimpleNamespace(optimizer=torch.optim.SGD(net.parameters(), lr=0.1), state=SimpleNamespace(), amp=False)
    GradientClipHandler(max_norm=max_norm)(engine)
    got = [p.grad for p in net.parameters() if p.grad is not None]
    assert all(torch.equal(a, b.grad) for a, b in zip(got, stock))
    assert float(engine.state.grad_norm) == pytest.approx(float(ref_norm))
    assert (max_norm < float(ref_norm)) == (not all(torch.equal(a, b) for a, b in zip(got, ref)))


def test_train_mode_cached_follows_every_switch():
    from monai_siamese.engines import TrainModeCached, unwrap_network

    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.5))
    view = TrainModeCached(net)
    assert unwrap_network(view) is net and set(view.module.state_dict()) == set(net.state_dict())
    view.eval()
    assert not any(m.training for m in view.modules())
    view.train()
    assert all(m.training for m in view.modules())
    net.eval()  # an evaluator switches the network itself: the next train() must walk the tree again
    view.train()
    assert all(m.training for m in net.modules())
    x = torch.randn(3, 2)
    net.eval()
    assert torch.equal(view.eval()(x), net(x))
