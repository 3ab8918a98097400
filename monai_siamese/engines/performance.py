"""Training speed options for the bundles: ``channels_last``, ``torch.compile`` with an eager fallback, fused AdamW,
bf16 autocast without a gradient scaler (no host-device synchronisation per step) and an EMA update in a few fused
(``foreach``) kernels, and the C allocator's thresholds for training on the CPU (:func:`tune_cpu_allocator`).

MONAI's ``SupervisedTrainer`` has ``amp`` but no compile or memory-format option, and always creates a float16
``GradScaler`` whose ``step`` reads the inf check back to the host every iteration; bf16 does not need one
(:class:`BF16NoScalerHandler`).
"""

from __future__ import annotations

import ctypes
import logging
import platform
import warnings
from typing import Any

import torch
from ignite.engine import Engine, Events
from ignite.handlers import EMAHandler
from torch import nn

from monai_siamese.engines.optim import pack_parameters, packed_base

__all__ = [
    "CompiledModule",
    "TrainModeCached",
    "compile_network",
    "to_channels_last",
    "fused_adamw_available",
    "BF16NoScalerHandler",
    "ForeachEMAHandler",
    "unwrap_network",
    "tune_cpu_allocator",
]

logger = logging.getLogger(__name__)


def to_channels_last(network: nn.Module, enabled: bool = True) -> nn.Module:
    """Convert a 2D network's 4D parameters to ``channels_last`` (faster convolutions under bf16 on tensor cores);
    3D networks are converted with ``channels_last_3d``. Returns the same module."""
    if not enabled:
        return network
    ndims = {p.ndim for p in network.parameters()}
    fmt = torch.channels_last_3d if 5 in ndims else torch.channels_last
    return network.to(memory_format=fmt)


class CompiledModule(nn.Module):
    """``torch.compile(module)`` that falls back to the eager module, with a warning, when compiling fails, whether
    at ``torch.compile`` or at the first call (where dynamo and inductor do their work: a missing C++ compiler or
    Triton, an unsupported op).

    The wrapper shares the module's parameters; checkpoints, EMA and weight export keep using the wrapped module
    (``.module``), so their state-dict keys do not change. Calls other than ``forward`` (methods of the module) are
    not compiled.

    Args:
        module: the network.
        compile_kwargs: arguments of ``torch.compile`` (``mode``, ``dynamic``, ``backend``, ...).
    """

    def __init__(self, module: nn.Module, **compile_kwargs: Any) -> None:
        super().__init__()
        self.module = module
        self.compile_kwargs = compile_kwargs
        self.compiled: Any = None
        self.fallback_reason: str | None = None
        try:
            self.compiled = torch.compile(module, **compile_kwargs)
        except Exception as e:  # noqa: BLE001 - any failure means: run eagerly
            self._fall_back(e)

    def _fall_back(self, error: BaseException) -> None:
        self.fallback_reason = f"{type(error).__name__}: {error}"
        self.compiled = None
        msg = f"torch.compile failed, running {type(self.module).__name__} eagerly: {self.fallback_reason[:500]}"
        logger.warning(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=3)

    @property
    def is_compiled(self) -> bool:
        return self.compiled is not None

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self.compiled is not None:
            try:
                return self.compiled(*args, **kwargs)
            except Exception as e:  # noqa: BLE001
                self._fall_back(e)
        return self.module(*args, **kwargs)


def compile_network(network: nn.Module, enabled: bool = True, **compile_kwargs: Any) -> nn.Module:
    """The network to give the trainer: a :class:`CompiledModule` when ``enabled`` (eager fallback with a warning),
    else the network itself.

    Args:
        network: the network (keep using it, not the wrapper, for checkpoints, EMA and the optimizer).
        enabled: compile or not (the bundles' ``compile`` key).
        compile_kwargs: arguments of ``torch.compile``.
    """
    return CompiledModule(network, **compile_kwargs) if enabled else network


class TrainModeCached(nn.Module):
    """The trainer's view of a network whose ``train(mode)`` walks the module tree only when the mode changes.

    MONAI's ``SupervisedTrainer`` calls ``network.train()`` at every iteration; on a diffusion UNet that is a
    ``setattr`` on every submodule (~170 on the demo network, 1.5 % of a small CPU iteration) to set a flag that is
    already set. The wrapped network's own flag tells whether anything switched it (``network.eval()`` from an
    evaluator sets it too), so the walk happens exactly when it changes something. Parameters and state-dict keys
    stay the wrapped module's (keep using it, not the wrapper, for checkpoints, EMA and the optimizer).

    Args:
        module: the network (or its :class:`CompiledModule`).
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def train(self, mode: bool = True) -> TrainModeCached:
        if self.module.training != mode or self.training != mode:
            super().train(mode)
        return self

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.module(*args, **kwargs)


def unwrap_network(network: nn.Module) -> nn.Module:
    """The network inside DDP / DataParallel / :class:`CompiledModule` / :class:`TrainModeCached` / ``torch.compile``
    wrappers."""
    while True:
        if isinstance(network, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            network = network.module
        elif isinstance(network, (CompiledModule, TrainModeCached)):
            network = network.module
        elif hasattr(network, "_orig_mod") and isinstance(network._orig_mod, nn.Module):
            network = network._orig_mod
        else:
            return network


def fused_adamw_available(device: torch.device | str | None = None) -> bool:
    """Whether ``torch.optim.AdamW(fused=True)`` can run on ``device`` (default: CUDA when available, else the CPU).

    True on CUDA when it is available and on the CPU where this torch has the fused CPU kernel (torch >= 2.4): one
    kernel over every parameter instead of ``foreach``'s dozen passes (1.3 against 4.7 ms per step for the demo
    UNet's 0.64 M parameters on one CPU thread: ``scripts/benchmark_adamw.py``). The same update up to float
    rounding (a few ULPs per step, as on CUDA; ``tests/scripts/test_overhead_fixes.py`` compares each step from
    equal weights and moments); a run resumes with the implementation it started with, so resume stays exact."""
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type == "cuda":
        return torch.cuda.is_available()
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices
    except ImportError:  # a torch without the list has no fused CPU kernel either
        return False
    return dev.type == "cpu" and "cpu" in _get_fused_kernels_supported_devices()


class BF16NoScalerHandler:
    """Under bf16 autocast, replace the float16 ``GradScaler`` that MONAI's ``Trainer.run`` creates with a disabled one
    at ``STARTED``: bf16 has float32's range, so loss scaling is not needed, and the scaler's inf check reads a value
    back to the host every step. Autocast stays on (MONAI enters it only when ``engine.scaler`` is not None).

    Args:
        amp_dtype: the trainer's autocast dtype; nothing changes unless it is ``torch.bfloat16``.
    """

    def __init__(self, amp_dtype: torch.dtype | None = torch.bfloat16) -> None:
        self.amp_dtype = amp_dtype

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine) -> None:
        dtype = self.amp_dtype or (getattr(engine, "amp_kwargs", None) or {}).get("dtype")
        if getattr(engine, "amp", False) and dtype == torch.bfloat16:
            engine.scaler = torch.amp.GradScaler("cuda", enabled=False)


class ForeachEMAHandler(EMAHandler):
    """ignite's ``EMAHandler`` with the same update, ``ema = ema * (1 - m) + m * model`` per parameter, done as one
    ``torch._foreach_lerp_`` (``ema + m * (model - ema)``) over cached parameter lists: one kernel per iteration
    instead of two per parameter tensor, and no module-tree walk (``parameters()``) per iteration. Equal to
    ``EMAHandler`` up to float rounding (the same average written as a lerp); on a small network on the CPU the ignite
    update costs ~8% of a training iteration, ``foreach`` multiply-then-add ~1.4 %, the lerp about half of that.

    Takes ``EMAHandler``'s arguments; the lists are built at the first update (the networks' parameters are updated in
    place by optimizers and ``load_state_dict``, so the lists stay valid). When the model's parameters are packed into
    one buffer (:class:`~monai_siamese.engines.optim.ContiguousAdamW`), the EMA copy is packed likewise and the update
    is a single lerp over the two buffers (0.06 against 0.28 ms for the demo UNet on one CPU thread).
    """

    _params: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None
    _buffers: list[tuple[torch.Tensor, torch.Tensor]] | None = None
    # EMA buffer, model buffer, the parameters viewing them (EMA's then the model's) and their data pointers
    _packed: tuple[torch.Tensor, torch.Tensor, list[torch.Tensor], list[int]] | None = None

    def _setup(self) -> None:
        ema = list(self.ema_model.parameters())
        model = list(self.model.parameters())
        self._params = (ema, model)
        self._buffers = list(zip(self.ema_model.buffers(), self.model.buffers()))
        # the model's parameters packed into one buffer (ContiguousAdamW): pack the EMA copy the same way, and the
        # update is one lerp over the buffers for as long as the model's parameters stay views of theirs
        base = packed_base(model) if model else None
        if base is not None and len(ema) == len(model) and all(
            e.shape == m.shape and e.dtype == m.dtype for e, m in zip(ema, model)
        ):
            ema_base, views = pack_parameters(ema), ema + model
            self._packed = (ema_base, base, views, [p.data_ptr() for p in views])

    @torch.no_grad()
    def _update_ema_model(self, engine: Engine, name: str) -> None:
        momentum = getattr(engine.state, name)
        if self._params is None:
            self._setup()
        ema, model = self._params
        if self._packed is not None and [p.data_ptr() for p in self._packed[2]] == self._packed[3]:
            self._packed[0].lerp_(self._packed[1], float(momentum))  # one kernel over the packed buffers
        elif ema:
            torch._foreach_lerp_(ema, model, float(momentum))
        if self.handle_buffers == "update":
            for ema_b, model_b in self._buffers or ():
                try:
                    ema_b.mul_(1.0 - momentum).add_(model_b.data, alpha=momentum)
                except RuntimeError:  # integer buffers: copied, as EMAHandler does
                    ema_b.data = model_b.data
        elif self.handle_buffers == "copy":
            for ema_b, model_b in self._buffers or ():
                ema_b.data = model_b.data


#: glibc ``mallopt`` parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_TUNED: dict[str, int] = {}


def tune_cpu_allocator(mmap_threshold_mib: int = 32, trim_threshold_mib: int = 128) -> bool:
    """Keep CPU training's large, short-lived tensors in glibc's heap instead of fresh ``mmap`` pages.

    A training step allocates and frees the same activation-sized buffers (megabytes) every iteration. glibc serves
    allocations above its mmap threshold with new ``mmap`` pages, which the kernel zero-fills on first touch and
    ``munmap`` returns on free, so every iteration pays the page faults again; its dynamic threshold only partly
    catches up. Raising the threshold to 32 MiB (glibc's maximum on 64-bit) and the heap trim threshold above it lets
    freed buffers be reused: the three generators' demo training steps on one thread ran 2-13 % faster (a plain
    loop, tuned against untuned in separate processes; none measurable for the segmentation bundle), peak RSS
    unchanged (``docs/results/benchmark_overhead``, round 10). What it costs: up to ``trim_threshold_mib`` of freed
    memory stays with the process instead of going back to the system. The same effect as starting the process with
    ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` set, or jemalloc.

    It changes the whole process's allocator (not only the caller's tensors), so it is opt-in: the bundles call it
    from ``initialize`` when their device is the CPU (``cpu_allocator_tuning`` in ``common.json``). A no-op that
    returns False where the C library is not glibc (macOS, Windows, musl).

    Args:
        mmap_threshold_mib: allocations above this are ``mmap``-ed (at most 32 on 64-bit glibc).
        trim_threshold_mib: free memory at the top of the heap above this is returned to the system.

    Returns:
        whether both thresholds were set.
    """
    want = {"mmap": int(mmap_threshold_mib) << 20, "trim": int(trim_threshold_mib) << 20}
    if _TUNED == want:
        return True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = mallopt(_M_MMAP_THRESHOLD, want["mmap"]) == 1 and mallopt(_M_TRIM_THRESHOLD, want["trim"]) == 1
    if ok:
        _TUNED.clear()
        _TUNED.update(want)
    else:
        logger.warning("tune_cpu_allocator: glibc refused mallopt thresholds %s", want)
    return ok
