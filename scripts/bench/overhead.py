"""Engine overhead: one training iteration of each bundle as the bundle runs it (the stock ``SupervisedTrainer`` with
the bundle's prepare-batch, handlers, ``SeededDataset`` per-item seeding and ``ResumableBatchSampler``) against a
plain loop over the same fp32 network, optimizer settings and batch (:class:`~bench.bundle_setup.PlainLoop`).

Both variants are built from the bundle's ``train.json`` + ``demo.json`` (at the requested size and batch) and run
interleaved in one process, ``block`` iterations at a time; the ratio (bundle / plain images per second, on the wall
clock and on the process CPU clock) is taken per repeat, and its median and min-max are reported. Siamese-Diffusion
is timed in both phases of its training: ``early`` (online augmentation off) and ``late`` (on, 2/3 of training).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from bench.bundle_setup import PlainLoop, TrainerBlocks, bundle_parser
from bench.output import fmt, fmt_spread, table
from bench.timing import interleave

__all__ = ["PHASES", "measure_overhead", "overhead_markdown"]

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
    log=print,
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
            p_ours = bundle_parser(
                method, overrides=over, work_dir=work / "ours", device=device, size=size, batch=batch
            )
            trainer = p_ours.get_parsed_content("train#trainer")
            attach = [
                p_ours.get_parsed_content("train#resume_handler"),
                p_ours.get_parsed_content("train#checkpoint_saver"),
            ]
            ours = TrainerBlocks(trainer, block, attach=attach)
            p_plain = bundle_parser(
                method, overrides=over, work_dir=work / "plain", device=device, size=size, batch=batch
            )
            plain = PlainLoop(p_plain, block, method, image_weight=0.5, oa_active=oa_active)
            p_default = bundle_parser(
                method, overrides=over, work_dir=work / "plain_default", device=device, size=size, batch=batch
            )
            default = PlainLoop(p_default, block, method, image_weight=0.5, oa_active=oa_active, default_adamw=True)
            p_same = bundle_parser(
                method, overrides=over, work_dir=work / "plain_same", device=device, size=size, batch=batch
            )
            same = PlainLoop(p_same, block, method, image_weight=0.5, oa_active=oa_active, same_algorithm=True)
            variants = {"bundle": ours, "plain": plain, "plain_same_algorithm": same, "plain_default_adamw": default}
            inter = interleave(variants, repeats=repeats, warmup=1, log=log)
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
                **inter.summary(),
            }
            r = results[key]
            log(
                f"{key}: bundle/plain {fmt_spread(r['ratio_wall'])} (wall), {fmt_spread(r['ratio_cpu'])} (CPU); "
                f"bundle/plain with the same algorithm {fmt_spread(r['ratio_same_algorithm_cpu'])} (CPU); "
                f"bundle/plain with default AdamW {fmt_spread(r['ratio_default_adamw_cpu'])} (CPU)"
            )
            ours.close()
    return results


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
    ]
    return table(header, rows)


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
    )
    md = [
        "Engine overhead: the bundle's training iteration (stock SupervisedTrainer, prepare-batch, handlers, "
        "SeededDataset, ResumableBatchSampler, demo.json network) against a plain loop over the same fp32 network, "
        "AdamW settings (the bundle's implementation: fused on the CPU where torch has the kernel, else foreach) "
        "and batch (noise, timesteps, MSE, backward, step), against that loop doing the same training algorithm "
        "(gradient clipping, LR schedule, EMA of the weights: the difference is then the engine alone), and against "
        "the first loop with torch.optim.AdamW's default implementation (single-tensor on the CPU: what a "
        "hand-written loop gets). Ratio = bundle / plain images per second, median (min-max) over "
        f"{args.repeats} interleaved repeats of {args.block} iterations.",
        "",
        *overhead_markdown(res),
    ]
    return {"overhead": res}, "\n".join(md) + "\n"
