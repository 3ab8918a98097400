"""Speed options: torch.compile with an eager fallback, channels_last, fused AdamW availability, bf16 without a
gradient scaler."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Engine, Events
from torch import nn

from monai_siamese.engines import (
    BF16NoScalerHandler,
    CompiledModule,
    compile_network,
    fused_adamw_available,
    to_channels_last,
    unwrap_network,
)


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.GroupNorm(2, 4), nn.SiLU(), nn.Conv2d(4, 1, 1))


def _failing_backend(gm, example_inputs):
    raise RuntimeError("no compiler here")


def test_compile_falls_back_to_eager_with_a_warning():
    net = _net()
    x = torch.randn(2, 2, 8, 8)
    wrapped = compile_network(net, backend=_failing_backend)
    assert isinstance(wrapped, CompiledModule) and wrapped.is_compiled  # fails only at the first call
    with pytest.warns(RuntimeWarning, match="torch.compile failed"):
        y = wrapped(x)
    assert not wrapped.is_compiled and "no compiler here" in wrapped.fallback_reason
    torch.testing.assert_close(y, net(x))
    y.sum().backward()  # gradients reach the shared parameters
    assert net[0].weight.grad is not None
    # the state dict of the wrapped network is unchanged; the wrapper unwraps
    assert unwrap_network(wrapped) is net and set(net.state_dict()) == {k for k in _net().state_dict()}


def test_compile_fails_at_construction_falls_back():
    with pytest.warns(RuntimeWarning, match="torch.compile failed"):
        wrapped = compile_network(_net(), backend="no_such_backend")
    assert not wrapped.is_compiled
    assert wrapped(torch.randn(1, 2, 8, 8)).shape == (1, 1, 8, 8)


def test_compile_success_and_disabled():
    net = _net()
    assert compile_network(net, enabled=False) is net
    wrapped = compile_network(net, backend="eager")
    x = torch.randn(2, 2, 8, 8)
    torch.testing.assert_close(wrapped(x), net(x))
    assert wrapped.is_compiled


def test_channels_last_and_fused_adamw_flag():
    net = to_channels_last(_net())
    assert net[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert to_channels_last(_net(), enabled=False)[0].weight.is_contiguous()
    # the CPU kernel exists from torch 2.4 on (TorchVersion compares as a version; this project pins 2.13)
    assert fused_adamw_available("cpu") is (torch.__version__ >= "2.4")
    assert fused_adamw_available("cuda") == torch.cuda.is_available()


def test_bf16_no_scaler_handler():
    engine = Engine(lambda e, b: None)
    engine.amp, engine.amp_kwargs, engine.scaler = True, {"dtype": torch.bfloat16}, object()
    BF16NoScalerHandler(None).attach(engine)
    engine.fire_event(Events.STARTED)
    assert isinstance(engine.scaler, torch.amp.GradScaler) and not engine.scaler.is_enabled()
    engine16 = Engine(lambda e, b: None)
    marker = object()
    engine16.amp, engine16.scaler = True, marker
    BF16NoScalerHandler(torch.float16)(engine16)
    assert engine16.scaler is marker
