"""Running independent evaluation steps side by side: each task is a module-level function called with keyword
arguments (picklable), run in ``workers`` fresh processes (spawned, ``threads`` torch threads each) or in this
process. Two single-threaded trainings on two cores finish sooner than two two-threaded ones in a row: small CPU
convolutions do not scale linearly with threads.

Every task writes its own ``result.json`` through :func:`~monai_siamese.evaluation.steps.cached_step`, so an
interrupted parallel run resumes like a sequential one; the first error stops the run with that task named.
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Task", "run_tasks", "default_workers"]


@dataclass(frozen=True)
class Task:
    """``module:function`` called with ``kwargs``; ``name`` is what progress lines and errors say."""

    target: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    name: str = ""


def default_workers() -> int:
    """Processes for independent steps: the CPU cores (``os.sched_getaffinity``), at most 4, at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(4, cores))


def _call(target: str, kwargs: Mapping[str, Any]) -> Any:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)(**dict(kwargs))


def _init_worker(threads: int) -> None:
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)


def run_tasks(
    tasks: Sequence[Task], workers: int = 1, threads: int | None = None, log: Callable[[str], None] = print
) -> list[Any]:
    """Run ``tasks`` (independent of each other) and return their results in order.

    Args:
        tasks: the tasks.
        workers: processes; 1 runs them here, one after the other.
        threads: torch threads per worker process (default: the cores divided by ``workers``).
        log: progress printer.
    """
    if workers <= 1 or len(tasks) <= 1:
        return [_call(t.target, t.kwargs) for t in tasks]
    workers = min(workers, len(tasks))
    if threads is None:
        threads = max(1, (os.cpu_count() or workers) // workers)
    log(f"running {len(tasks)} independent steps in {workers} processes ({threads} thread(s) each)")
    ctx = multiprocessing.get_context("spawn")  # fork after torch started its thread pools can hang
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(threads,)) as pool:
        futures = [pool.submit(_call, t.target, t.kwargs) for t in tasks]
        done, pending = wait(futures, return_when=FIRST_EXCEPTION)
        for task, future in zip(tasks, futures):
            if future in done and future.exception() is not None:
                for p in pending:
                    p.cancel()
                raise RuntimeError(f"evaluation step {task.name or task.target} failed") from future.exception()
        return [f.result() for f in futures]
