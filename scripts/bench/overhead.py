"""Engine overhead: one training iteration of each bundle as the bundle runs it (the stock ``SupervisedTrainer`` with
the bundle's prepare-batch, handlers, ``SeededDataset`` per-item seeding and ``ResumableBatchSampler``) against a
plain loop over the same fp32 network, optimizer settings and batch (:class:`~bench.bundle_setup.PlainLoop`).

Both variants are built from the bundle's ``train.json`` + ``demo.json`` (at the requested size and batch) and run
interleaved in one process, ``block`` iterations at a time; the ratio (bundle / plain images per second, on the wall
clock and on the process CPU clock) is taken per repeat, and its median and min-max are reported. Siamese-Diffusion
is timed in both phases of its training: ``early`` (online augmentation off) and ``late`` (on, 2/3 of training).

The bundles tune the C allocator of their process on the CPU (:func:`~monai_siamese.engines.tune_cpu_allocator`), and
that setting is process-wide: the plain loops in this process run with it too (the ratios against them are the
engine's own cost). One more plain loop runs in a process of its own (:class:`OwnProcessPlainLoop`), started as a
user's training script starts, the allocator at its defaults, its blocks interleaved with the others: the ratio
against it is what a user sees between running the bundle and running a hand-written loop.

With ``compile`` the bundle runs with its ``compile`` option (``torch.compile`` of the denoising network), and two
more variants join the interleaving: the eager bundle and the plain loop over the compiled network (so the gain of
compiling is not credited to the engine). The first block of each compiled variant, where dynamo and inductor do
their work, is timed on its own: the one-off cost, and the iterations after which the compiled bundle has caught up
with the eager one (``break_even_iterations``).
"""

from __future__ import annotations

import multiprocessing
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from bench.bundle_setup import PlainLoop, TrainerBlocks, bundle_parser
from bench.output import fmt, fmt_spread, table
from bench.timing import interleave

__all__ = ["PHASES", "OwnProcessPlainLoop", "measure_overhead", "overhead_markdown"]

#: Siamese-Diffusion phases: overrides that put the trainer's inferer in the phase, and the plain loop's settings
PHASES = {
    "early": ({"oa_start": 1.0}, False),
    "late": ({"oa_start": 0.0}, True),
}


def _cases(methods: Sequence[str]) -> list[tuple[str, str]]:
    out = []
    for m in methods:
        out += [(m, p) for p in PHASES] if m == "siamese_diffusion" else [(m, "")]
    return out


def measure_overhead(
    methods: Sequence[str],
    sizes: Sequence[int],
    batch: int,
    block: int,
    repeats: int,
    work_dir: str | Path,
    device: str = "cpu",
    overrides: dict[str, Any] | None = None,
    compile: bool = False,
    log=print,
    seed: int | None = 0,
) -> dict[str, Any]:
    """Interleaved bundle-vs-plain timing for every method (and Siamese phase) and size.

    Args:
        methods: bundles.
        sizes: square image sizes.
        batch: batch size.
        block: iterations per timed block.
        repeats: timed rounds (>= 3).
        work_dir: scratch folder (checkpoints, logs).
        device: device.
        overrides: extra config overrides for both variants (e.g. a tiny network for tests).
        compile: the bundle with ``compile: true``, against the eager bundle and a plain loop over the compiled
            network as well.
        seed: common random numbers (:func:`~bench.timing.interleave`): every variant's ``k``-th block draws its
            noise and timesteps from torch seeded with ``seed + k``, so all variants do the same online augmentation
            work (Siamese-Diffusion) in a round; None for independent draws.
    """
    results: dict[str, Any] = {}
    for size in sizes:
        for method, phase in _cases(methods):
            key = f"{method}{'/' + phase if phase else ''}@{size}"
            over = {"num_iterations": 100_000, "epoch_length": 1000, **dict(overrides or {})}
            oa_active = False
            if phase:
                extra, oa_active = PHASES[phase]
                over.update(extra)
            work = Path(work_dir) / key.replace("/", "_").replace("@", "_")
            log(f"{key}: batch {batch}, {block} iterations per block, {repeats} repeats")
            if compile:  # a fresh dynamo cache per case: no recompile limit reached across cases (eager fallback)
                torch._dynamo.reset()
            ours = _bundle_blocks(method, {**over, "compile": bool(compile)}, work / "ours", device, size, batch, block)

            def plain_loop(folder: str, **options: Any) -> PlainLoop:
                """A plain loop over its own copy of the network (a separate parse: the same initial weights)."""
                p = bundle_parser(method, overrides=over, work_dir=work / folder, device=device, size=size, batch=batch)
                return PlainLoop(p, block, method, image_weight=0.5, oa_active=oa_active, **options)

            plain = plain_loop("plain")
            default = plain_loop("plain_default", default_adamw=True)
            same = plain_loop("plain_same", same_algorithm=True)
            own = OwnProcessPlainLoop(
                method, over, work / "plain_own_process", device, size, batch, block, oa_active=oa_active
            )
            variants = {
                "bundle": ours,
                "plain": plain,
                "plain_same_algorithm": same,
                "plain_default_adamw": default,
                "plain_own_process": own,
            }
            first_block: dict[str, float] = {}
            if compile:
                eager = _bundle_blocks(method, over, work / "eager", device, size, batch, block)
                variants.update({"bundle_eager": eager, "plain_compiled": plain_loop("plain_compiled", compile=True)})
                for name in ("bundle", "bundle_eager", "plain_compiled"):
                    t0 = time.perf_counter()
                    variants[name]()  # the compiled variants' first call compiles
                    first_block[name] = time.perf_counter() - t0
            inter = interleave(variants, repeats=repeats, warmup=1, log=log, seed=seed)
            results[key] = {
                "method": method,
                "phase": phase or None,
                "size": size,
                "batch": batch,
                "block": block,
                "repeats": repeats,
                "ratio_wall": inter.ratio("bundle", "plain", "wall"),
                "ratio_cpu": inter.ratio("bundle", "plain", "cpu"),
                "ratio_same_algorithm_wall": inter.ratio("bundle", "plain_same_algorithm", "wall"),
                "ratio_same_algorithm_cpu": inter.ratio("bundle", "plain_same_algorithm", "cpu"),
                "ratio_default_adamw_wall": inter.ratio("bundle", "plain_default_adamw", "wall"),
                "ratio_default_adamw_cpu": inter.ratio("bundle", "plain_default_adamw", "cpu"),
                "ratio_own_process_wall": inter.ratio("bundle", "plain_own_process", "wall"),
                "ratio_own_process_cpu": inter.ratio("bundle", "plain_own_process", "cpu"),
                "ratio_own_process_cpu_interval": inter.ratio_interval("bundle", "plain_own_process", "cpu"),
                "ratio_cpu_interval": inter.ratio_interval("bundle", "plain", "cpu"),
                **inter.summary(),
            }
            if compile:
                results[key].update(_compile_figures(inter, first_block, block))
            r = results[key]
            log(
                f"{key}: bundle/plain {fmt_spread(r['ratio_wall'])} (wall), {fmt_spread(r['ratio_cpu'])} (CPU); "
                f"bundle/plain with the same algorithm {fmt_spread(r['ratio_same_algorithm_cpu'])} (CPU); "
                f"bundle/plain with default AdamW {fmt_spread(r['ratio_default_adamw_cpu'])} (CPU); "
                f"bundle/plain in its own process {fmt_spread(r['ratio_own_process_cpu'])} (CPU)"
            )
            ours.close()
            own.close()
            if compile:
                eager.close()
    return results


class OwnProcessPlainLoop:
    """:class:`~bench.bundle_setup.PlainLoop` in a process of its own (``spawn``: a fresh interpreter, as a user's
    training script): the C allocator at its defaults (``cpu_allocator_tuning`` off unless ``allocator_tuning``), the
    caller's torch threads.
    Each call runs one block there and returns its :class:`~bench.timing.Block` (that process's clocks).

    Args:
        method: the bundle.
        overrides: config overrides (as for the other plain loops).
        work: scratch folder.
        device: device.
        size: square image size.
        batch: batch size.
        block: iterations per block.
        oa_active: Siamese-Diffusion online augmentation on.
        allocator_tuning: tune the allocator there as the bundles do (to time the setting alone against an untuned
            twin, ``docs/results/benchmark_overhead/round10/alloc_ab.py``).
    """

    def __init__(
        self, method: str, overrides: dict, work: Path, device: str, size: int, batch: int, block: int,
        oa_active: bool = False, allocator_tuning: bool = False,
    ) -> None:  # fmt: skip
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        over = {**overrides, "cpu_allocator_tuning": bool(allocator_tuning)}
        options = {"overrides": over, "work_dir": str(work), "device": device}
        args = (child, method, options, size, batch, block, oa_active, torch.get_num_threads())
        self.process = ctx.Process(target=_own_process_worker, args=args, daemon=True)
        self.process.start()
        child.close()
        self._reply()  # built

    def _reply(self) -> Any:
        try:
            kind, value = self.conn.recv()
        except EOFError:  # the process died without a word (killed, out of memory)
            self.process.join(timeout=30)
            kind, value = "error", f"it ended with exit code {self.process.exitcode}"
        if kind == "error":
            self.close()
            raise RuntimeError(f"the plain loop's own process failed:\n{value}")
        return value

    _seed: int | None = None

    def manual_seed(self, seed: int) -> None:
        """Seed that process's torch random generator before the next block (common random numbers)."""
        self._seed = int(seed)

    def __call__(self) -> Any:
        self.conn.send(("block", self._seed))
        self._seed = None
        return self._reply()

    def close(self) -> None:
        if self.process.is_alive():
            try:
                self.conn.send("close")
            except OSError:
                pass
            self.process.join(timeout=30)
        if self.process.is_alive():
            self.process.kill()
        self.conn.close()


def _own_process_worker(
    conn: Any, method: str, options: dict, size: int, batch: int, block: int, oa_active: bool, threads: int
) -> None:
    """:class:`OwnProcessPlainLoop`'s process: build the loop, then run a block per request until told to close."""
    try:
        torch.set_num_threads(threads)
        parser = bundle_parser(method, size=size, batch=batch, **options)
        loop = PlainLoop(parser, block, method, image_weight=0.5, oa_active=oa_active)
        conn.send(("ok", None))
        while (request := conn.recv()) != "close":
            if request[1] is not None:
                torch.manual_seed(request[1])
            conn.send(("ok", loop()))
    except Exception:  # noqa: BLE001 - sent to the parent, which raises it
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


def _bundle_blocks(method: str, over: dict, work: Path, device: str, size: int, batch: int, block: int) -> Any:
    """The bundle's ``train#trainer`` with what its ``run`` attaches, run ``block`` iterations at a time."""
    p = bundle_parser(method, overrides=over, work_dir=work, device=device, size=size, batch=batch)
    attach = [p.get_parsed_content("train#resume_handler"), p.get_parsed_content("train#checkpoint_saver")]
    return TrainerBlocks(p.get_parsed_content("train#trainer"), block, attach=attach)


def _compile_figures(inter: Any, first_block: dict[str, float], block: int) -> dict[str, Any]:
    """Ratios of the compiled bundle, the one-off compile time and the iterations that pay it back."""

    def seconds_per_iteration(name: str) -> float:
        return inter.blocks[name][0].items / block / inter.rate(name, "wall")["median"]

    per_it_compiled, per_it_eager = seconds_per_iteration("bundle"), seconds_per_iteration("bundle_eager")
    compile_s = first_block["bundle"] - first_block["bundle_eager"]
    gain = per_it_eager - per_it_compiled
    return {
        "first_block_s": first_block,
        "compile_s": compile_s,
        "break_even_iterations": compile_s / gain if gain > 0 else None,
        "ratio_compiled_vs_eager_bundle_cpu": inter.ratio("bundle", "bundle_eager", "cpu"),
        "ratio_compiled_vs_eager_bundle_wall": inter.ratio("bundle", "bundle_eager", "wall"),
        "ratio_eager_bundle_cpu": inter.ratio("bundle_eager", "plain", "cpu"),
        "ratio_vs_plain_compiled_cpu": inter.ratio("bundle", "plain_compiled", "cpu"),
        "ratio_vs_plain_compiled_wall": inter.ratio("bundle", "plain_compiled", "wall"),
    }


def _fmt_interval(ci: dict[str, float] | None) -> str:
    """``geomean [low, high]`` of :meth:`~bench.timing.Interleaved.ratio_interval` (``-`` for older results)."""
    return "-" if not ci else f"{ci['geomean']:.3f} [{ci['low']:.3f}, {ci['high']:.3f}]"


def overhead_markdown(results: dict[str, Any]) -> list[str]:
    """The overhead table: images/s of both variants and the ratios, median (min-max) over repeats."""
    rows = []
    for key, r in results.items():
        name = r["method"] + (f" ({r['phase']})" if r["phase"] else "")
        rows.append(
            [
                name,
                f"{r['size']}x{r['size']}",
                r["batch"],
                fmt_spread(r["bundle"]["images_per_cpu_s"]),
                fmt_spread(r["plain"]["images_per_cpu_s"]),
                f"**{fmt_spread(r['ratio_cpu'])}**",
                fmt(r["bundle"]["images_per_s"]["median"]),
                fmt(r["plain"]["images_per_s"]["median"]),
                fmt_spread(r["ratio_wall"]),
                f"**{fmt_spread(r.get('ratio_same_algorithm_cpu'))}**",
                fmt_spread(r.get("ratio_same_algorithm_wall")),
                fmt_spread(r.get("ratio_default_adamw_cpu")),
                f"**{fmt_spread(r.get('ratio_own_process_cpu'))}**",
                fmt_spread(r.get("ratio_own_process_wall")),
                _fmt_interval(r.get("ratio_own_process_cpu_interval")),
                _fmt_interval(r.get("ratio_cpu_interval")),
            ]
        )
    header = [
        "method",
        "size",
        "batch",
        "bundle img/CPU-s",
        "plain img/CPU-s",
        "ratio (CPU clock)",
        "bundle img/s",
        "plain img/s",
        "ratio (wall clock)",
        "ratio vs plain loop with the same algorithm (CPU clock)",
        "same, wall clock",
        "ratio vs plain loop with default AdamW (CPU clock)",
        "ratio vs plain loop in its own process, default allocator (CPU clock)",
        "same, wall clock",
        "vs own process: geometric mean [95 % CI] (CPU clock)",
        "vs plain loop: geometric mean [95 % CI] (CPU clock)",
    ]
    return table(header, rows)


def compile_markdown(results: dict[str, Any]) -> list[str]:
    """The ``compile`` table: the compiled bundle against the eager plain loop, the compiled plain loop and the eager
    bundle; the one-off compile time and its break-even."""
    rows = []
    for r in results.values():
        if "compile_s" not in r:
            continue
        even = r["break_even_iterations"]
        rows.append(
            [
                r["method"] + (f" ({r['phase']})" if r["phase"] else ""),
                f"{r['size']}x{r['size']}",
                f"**{fmt_spread(r['ratio_cpu'])}**",
                fmt_spread(r["ratio_wall"]),
                fmt_spread(r["ratio_vs_plain_compiled_cpu"]),
                fmt_spread(r["ratio_compiled_vs_eager_bundle_cpu"]),
                fmt_spread(r["ratio_eager_bundle_cpu"]),
                f"{r['compile_s']:.0f}",
                "never" if even is None else f"{even:.0f}",
            ]
        )
    header = [
        "method",
        "size",
        "compiled bundle / eager plain loop (CPU clock)",
        "same, wall clock",
        "compiled bundle / compiled plain loop (CPU clock)",
        "compiled / eager bundle (CPU clock)",
        "eager bundle / eager plain loop (CPU clock)",
        "compile time (s, wall)",
        "break-even (iterations)",
    ]
    return table(header, rows) if rows else []


def run_overhead_mode(args: Any, device: torch.device) -> tuple[dict, str]:
    """``--overhead`` of ``scripts/benchmark.py``: returns the result and its Markdown."""
    res = measure_overhead(
        args.methods,
        args.sizes,
        args.batch or 8,
        args.block,
        args.repeats,
        Path(args.out) / "work_overhead",
        str(device),
        compile=bool(getattr(args, "compile", False)),
    )
    md = [
        "Engine overhead: the bundle's training iteration (stock SupervisedTrainer, prepare-batch, handlers, "
        "SeededDataset, ResumableBatchSampler, demo.json network) against a plain loop over the same fp32 network, "
        "AdamW settings (the bundle's implementation: fused on the CPU where torch has the kernel, else foreach) "
        "and batch (noise, timesteps, MSE, backward, step), against that loop doing the same training algorithm "
        "(gradient clipping, LR schedule, EMA of the weights: the difference is then the engine alone), and against "
        "the first loop with torch.optim.AdamW's default implementation (single-tensor on the CPU: what a "
        "hand-written loop gets). The bundles tune the C allocator of their process on the CPU "
        "(monai_siamese.engines.tune_cpu_allocator), which the plain loops of this process share; the last "
        "columns are against the first plain loop run in a process of its own with the allocator's defaults (what "
        "a user's script gets). Every variant's k-th block draws its noise and timesteps from the same seed (common "
        "random numbers: equal online augmentation work in Siamese-Diffusion's late phase). Ratio = bundle / plain "
        "images per second, median (min-max) over "
        f"{args.repeats} interleaved repeats of {args.block} iterations; the last two columns give the geometric "
        "mean of the per-repeat ratios with its 95 % t-interval (how precisely the repeats pin the ratio down).",
        "",
        *overhead_markdown(res),
    ]
    if getattr(args, "compile", False):
        md += [
            "",
            "With `--compile` the bundle variant above is the bundle with `compile: true` (`torch.compile` of its "
            "denoising network); below it against the eager plain loop (the table's plain), a plain loop over the "
            "compiled network, and the eager bundle. Compile time: the first block of the compiled bundle less the "
            "eager bundle's; break-even: the iterations whose saving pays it back.",
            "",
            *compile_markdown(res),
        ]
    return {"overhead": res}, "\n".join(md) + "\n"
