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


_ALLOCATOR_PROBE = """
import ctypes, json, sys
import torch
from monai_siamese.engines import tune_cpu_allocator

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2

def mmapped_after_alloc():  # mmap-ed chunks while a fresh 8 MiB tensor is alive
    x = torch.empty(2 << 20, dtype=torch.float32)
    n = libc.mallinfo2().hblks
    del x
    return n

base = libc.mallinfo2().hblks
before = mmapped_after_alloc() - base
tuned = tune_cpu_allocator()
after = mmapped_after_alloc() - libc.mallinfo2().hblks
print(json.dumps({"before": before, "after": after, "tuned": tuned, "again": tune_cpu_allocator()}))
"""


def test_tune_cpu_allocator_keeps_large_buffers_in_the_heap():
    """Measured on the allocator itself, in a fresh process (the setting is process-wide): an 8 MiB buffer is
    ``mmap``-ed at glibc's defaults and comes from the heap after tuning."""
    import json
    import platform
    import subprocess
    import sys

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc only (elsewhere tune_cpu_allocator is a no-op returning False)")
    out = subprocess.run([sys.executable, "-c", _ALLOCATOR_PROBE], capture_output=True, text=True, check=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res == {"before": 1, "after": 0, "tuned": True, "again": True}


def test_tune_cpu_allocator_is_a_no_op_without_glibc(monkeypatch):
    import platform

    from monai_siamese.engines import performance

    monkeypatch.setattr(performance, "_TUNED", {})
    monkeypatch.setattr(platform, "libc_ver", lambda *a, **k: ("musl", "1.2"))
    assert performance.tune_cpu_allocator() is False


def test_bundles_tune_the_allocator_on_the_cpu_only():
    from monai_siamese.bundles import read_config

    for name in ("seg_guided_diffusion", "siamese_diffusion", "meddiff_ft", "segmentation"):
        cpu = read_config(name, ["train.json"], {"device": "$torch.device('cpu')"})
        gpu = read_config(name, ["train.json"], {"device": "$torch.device('cuda:0')"})
        assert cpu.get_parsed_content("cpu_allocator_tuning") is True
        assert gpu.get_parsed_content("cpu_allocator_tuning") is False
        assert any("tune_cpu_allocator" in str(x) for x in cpu["initialize"])
