"""Clocks, interleaved repeats and their statistics, peak memory, FLOPs and the environment of a benchmark run.

Two clocks run side by side: wall time (what a user waits) and the process's CPU time (``time.process_time``: the
work done, which other processes on a shared machine do not change as long as the process runs one thread). Ratios
are computed per repeat on both clocks and reported as the median with the min-max over repeats.
"""

from __future__ import annotations

import datetime
import math
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = [
    "BF16_PEAK_TFLOPS",
    "Block",
    "Interleaved",
    "timed",
    "timed_steps",
    "spread",
    "interleave",
    "sync",
    "rss_mib",
    "reset_memory",
    "peak_memory",
    "count_flops",
    "bf16_peak_tflops",
    "environment",
]

#: dense bf16 tensor-core peaks (TFLOPS), matched by substring of the device name, first match wins
BF16_PEAK_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100", 989.0),
    ("H200", 989.0),
    ("GH200", 989.0),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("A10G", 70.0),
    ("RTX 4090", 165.0),
)


def sync(device: torch.device | str) -> None:
    """Wait for the device (CUDA) so that a clock read covers the queued work."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Block:
    """One timed block of a variant: ``items`` processed (images) in ``wall_s`` seconds and ``cpu_s`` CPU seconds,
    with optional per-step times."""

    items: int
    wall_s: float
    cpu_s: float
    steps: list[float] = field(default_factory=list)

    @property
    def items_per_s(self) -> float:
        return self.items / max(self.wall_s, 1e-12)

    @property
    def items_per_cpu_s(self) -> float:
        return self.items / max(self.cpu_s, 1e-12)


def timed(fn: Callable[[], int], device: torch.device | str = "cpu") -> Block:
    """Run ``fn`` (returns the number of items it processed) between two reads of both clocks."""
    sync(device)
    w0, c0 = time.perf_counter(), time.process_time()
    items = fn()
    sync(device)
    return Block(int(items), time.perf_counter() - w0, time.process_time() - c0)


def timed_steps(
    step: Callable[[], Any], iterations: int, items_per_step: int, device: torch.device | str = "cpu"
) -> Block:
    """Run ``step`` ``iterations`` times between two reads of both clocks (``iterations * items_per_step`` items)."""

    def run() -> int:
        for _ in range(iterations):
            step()
        return iterations * items_per_step

    return timed(run, device)


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median, min and max (and the count) of ``values``."""
    vals = [float(v) for v in values]
    if not vals:
        return {"median": float("nan"), "min": float("nan"), "max": float("nan"), "n": 0}
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}


@dataclass
class Interleaved:
    """The blocks of every variant, in run order (block ``r`` of each variant ran in repeat ``r``)."""

    blocks: dict[str, list[Block]]

    def rate(self, name: str, clock: str = "wall") -> dict[str, float]:
        """Items per second (``wall``) or per CPU second (``cpu``) of a variant over its blocks."""
        attr = "items_per_s" if clock == "wall" else "items_per_cpu_s"
        return spread([getattr(b, attr) for b in self.blocks[name]])

    def ratios(self, num: str, den: str, clock: str = "wall") -> list[float]:
        """Throughput ratios ``num / den``, one per repeat (the blocks of one repeat ran next to each other)."""
        attr = "items_per_s" if clock == "wall" else "items_per_cpu_s"
        pairs = zip(self.blocks[num], self.blocks[den])
        return [getattr(a, attr) / max(getattr(b, attr), 1e-12) for a, b in pairs]

    def ratio(self, num: str, den: str, clock: str = "wall") -> dict[str, float]:
        """Median (min-max) of the per-repeat throughput ratios ``num / den``."""
        return spread(self.ratios(num, den, clock))

    def ratio_interval(self, num: str, den: str, clock: str = "wall") -> dict[str, float]:
        """Geometric mean of the per-repeat ratios ``num / den`` with its two-sided 95 % t-interval (the evaluation's
        :func:`~monai_siamese.evaluation.report.ci95` over the logs of the ratios): how precisely the repeats pin the
        ratio down, where the min-max of :meth:`ratio` only says how far single repeats strayed."""
        from monai_siamese.evaluation.report import ci95

        m, low, high, n = ci95([math.log(r) for r in self.ratios(num, den, clock)])
        return {"geomean": math.exp(m), "low": math.exp(low), "high": math.exp(high), "n": n}

    def summary(self) -> dict[str, Any]:
        """JSON-able rates and raw blocks."""
        return {
            name: {
                "images_per_s": self.rate(name, "wall"),
                "images_per_cpu_s": self.rate(name, "cpu"),
                "blocks": [
                    {"items": b.items, "wall_s": round(b.wall_s, 5), "cpu_s": round(b.cpu_s, 5)} for b in blocks
                ],
            }
            for name, blocks in self.blocks.items()
        }


def interleave(
    variants: Mapping[str, Callable[[], Block]],
    repeats: int = 3,
    warmup: int = 1,
    log: Callable[[str], None] | None = None,
    seed: int | None = None,
) -> Interleaved:
    """Run each variant's block ``warmup`` times (discarded), then ``repeats`` rounds of A B C ... A B C ....

    Args:
        variants: name -> a callable that runs one block and returns its :class:`Block`.
        repeats: timed rounds (at least 3 for a median with a spread).
        warmup: untimed rounds first.
        log: optional printer of each block's throughput.
        seed: common random numbers: before each variant's block of round ``k`` (warm-up rounds counted), torch's
            random generator is seeded with ``seed + k`` (by the variant's own ``manual_seed(s)`` where it has one,
            e.g. a variant that runs in another process), so that variants drawing the same random numbers in the
            same order do the same work in a round. Where the work depends on the draws (Siamese-Diffusion's online
            augmentation runs for the samples whose timestep is small: 0 to 14 of 80 in a block of 10 iterations of
            8), independent draws put that spread into the ratio.
    """
    def run(fn: Callable[[], Block], k: int) -> Block:
        if seed is not None:
            getattr(fn, "manual_seed", torch.manual_seed)(seed + k)
        return fn()

    for k in range(warmup):
        for fn in variants.values():
            run(fn, k)
    blocks: dict[str, list[Block]] = {name: [] for name in variants}
    for r in range(repeats):
        for name, fn in variants.items():
            b = run(fn, warmup + r)
            blocks[name].append(b)
            if log is not None:
                log(
                    f"  repeat {r + 1}/{repeats} {name:24s} {b.items_per_s:8.2f} img/s  {b.items_per_cpu_s:8.2f} img/CPU-s"
                )
    return Interleaved(blocks)


def rss_mib() -> float:
    """Current resident set size of this process (MiB)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def reset_memory(device: torch.device | str) -> float:
    """Reset CUDA peak statistics; returns the memory in use now (CUDA allocated, or the CPU RSS) in MiB."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device) / 2**20
    return rss_mib()


def peak_memory(device: torch.device | str) -> dict[str, Any]:
    """Peak memory: CUDA ``max_memory_allocated`` or the process's peak RSS (``ru_maxrss``), in MiB."""
    device = torch.device(device)
    if device.type == "cuda":
        return {"peak_mib": torch.cuda.max_memory_allocated(device) / 2**20, "memory": "cuda max_memory_allocated"}
    return {"peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "memory": "process peak RSS"}


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of one call of ``fn`` (forward and backward if it runs them), by ``torch.utils.flop_counter``."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return int(counter.get_total_flops())


def bf16_peak_tflops(device: torch.device | str) -> float | None:
    """Dense bf16 peak of a known GPU (None elsewhere)."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, peak in BF16_PEAK_TFLOPS:
        if key in name:
            return peak
    return None


def environment(device: torch.device | str) -> dict[str, Any]:
    """Device name, library versions, threads and the date (for the report header)."""
    import monai

    try:
        import diffusers

        diffusers_version = diffusers.__version__
    except ImportError:  # pragma: no cover - optional
        diffusers_version = "-"
    device = torch.device(device)
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "device_name": (
            torch.cuda.get_device_name(device)
            if device.type == "cuda"
            else f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
        ),
        "torch": torch.__version__,
        "monai": monai.__version__,
        "diffusers": diffusers_version,
        "threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "unset"),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "bf16_peak_tflops": bf16_peak_tflops(device),
    }
