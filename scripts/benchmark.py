"""Benchmarks of the three generator bundles, built from their configs (``train.json`` + ``demo.json`` over
``common.json``, with overrides), written as JSON + Markdown to ``--out``.

Modes (one per run):

- default: speed against the reference projects' way, measured in the same run: training images/s of the bundle's
  ``train#trainer`` (data pipeline, prepare-batch, handlers) vs the reference loop (diffusers ``UNet2DModel``, fp32;
  the deep-copying step for Siamese-Diffusion), sampling images/s of ``ConditionalSampler`` (DDIM 50/25/10,
  DPM-Solver++ (2M) 20/10) vs fp32 DDIM 50, peak memory (a process per variant), FLOPs per step (and MFU on CUDA);
  faithfulness Dice per sampler setting of the segmentation-guided model (``--generator``, ``--segmenter`` or quick
  ones; ``--skip_quality`` skips it);
- ``--overhead``: the bundle's training iteration against a plain loop over the same fp32 network (engine overhead),
  at ``--sizes``;
- ``--quality_per_compute``: faithfulness and FID after ``--budgets`` CPU-minutes of training, at 4/8/16/50 sampling
  steps, per method and objective (see ``scripts/bench/qpc.py``);
- ``--smoke_full``: each generator's ``train.json`` at full size (256 x 256, reference channels, batch 1, two
  iterations, ``num_workers`` 0) on this device: s/iteration, peak RSS, FLOPs per step.

Every ratio is the median over >= 3 interleaved repeats (A B A B ...) with its min-max.

    python scripts/benchmark.py --quick --device cpu
    python scripts/benchmark.py --overhead --sizes 32 64 --device cpu
    python scripts/benchmark.py --quality_per_compute --out docs/results/quality_per_compute --work /tmp/qpc
    python scripts/benchmark.py --smoke_full --device cpu
    python scripts/benchmark.py --device cuda --resolution 256 --batch 16
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
for _p in (str(REPO / "scripts"), str(REPO)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from bench.output import command_line, stamp, write_result  # noqa: E402
from bench.timing import environment  # noqa: E402

METHODS = ("seg_guided_diffusion", "siamese_diffusion", "meddiff_ft")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--overhead", action="store_true", help="bundle trainer vs plain loop (engine overhead)")
    mode.add_argument("--quality_per_compute", action="store_true", help="quality after CPU-time budgets")
    mode.add_argument("--smoke_full", action="store_true", help="train.json at full size: 2 iterations per method")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    p.add_argument("--quick", action="store_true", help="CPU preset of the speed mode: 32x32, small channels")
    p.add_argument("--resolution", type=int, default=None, help="image size (speed mode, quality per compute)")
    p.add_argument("--batch", type=int, default=None, help="training batch")
    p.add_argument("--sample_batch", type=int, default=None, help="masks sampled at once")
    p.add_argument("--channels", type=int, nargs="+", default=None, help="UNet channels (speed mode)")
    p.add_argument("--steps", type=int, default=None, help="speed mode: timed training iterations per block")
    p.add_argument("--warmup", type=int, default=None, help="accepted for old commands: a whole block is the warm-up")
    p.add_argument("--sample_repeats", type=int, default=None, help="accepted for old commands: see --repeats")
    p.add_argument("--repeats", type=int, default=3, help="interleaved repeats per ratio (>= 3)")
    p.add_argument("--block", type=int, default=5, help="--overhead: iterations per timed block")
    p.add_argument("--sizes", type=int, nargs="+", default=[32, 64], help="--overhead: image sizes")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--no_amp", action="store_true", help="no bf16 autocast for ours on CUDA")
    p.add_argument("--cpu_bf16", action="store_true", help="bf16 autocast for ours on CPU too")
    p.add_argument("--channels_last", action="store_true")
    p.add_argument("--compile", action="store_true", help="torch.compile ours (eager fallback with a warning)")
    p.add_argument("--skip_quality", action="store_true", help="speed mode: no faithfulness Dice")
    p.add_argument("--generator", default=None, help="seg_guided weights (demo.json architecture)")
    p.add_argument("--segmenter", default=None, help="segmenter for load_segmenter (bundle folder or weights)")
    p.add_argument("--quality_masks", type=int, default=None)
    p.add_argument("--quality_size", type=int, default=None, help="generator size when trained here")
    p.add_argument("--generator_iterations", type=int, default=None)
    p.add_argument("--segmenter_iterations", type=int, default=None)
    p.add_argument("--dice_tolerance", type=float, default=0.01)
    p.add_argument("--budgets", type=float, nargs="+", default=[2, 5, 10], help="CPU-minutes (quality per compute)")
    p.add_argument("--objectives", nargs="+", default=None, help="quality per compute: objectives (default all)")
    p.add_argument("--sampling_steps", type=int, nargs="+", default=None, help="quality per compute: step counts")
    p.add_argument("--work", default=None, help="scratch folder (quality per compute; resumable)")
    p.add_argument("--judge_iterations", type=int, default=900)
    p.add_argument("--judge_size", type=int, default=128)
    p.add_argument("--judge_channels", type=int, nargs="+", default=[16, 32, 64, 128])
    p.add_argument("--judge_res_units", type=int, default=2)
    p.add_argument("--val_seeds", type=int, default=4, help="quality per compute: seeds per validation mask")
    p.add_argument("--train_masks", type=int, default=24, help="quality per compute: training masks sampled too")
    p.add_argument("--qpc_tiny", action="store_true", help="quality per compute with tiny.json (tests)")
    p.add_argument("--qpc_report_only", action="store_true", help="quality per compute: report the cached steps only")
    p.add_argument("--smoke_iterations", type=int, default=2)
    p.add_argument("--out", default="benchmark_results")
    p.add_argument("--in_process", action="store_true", help="no process per variant (tests; memory not per variant)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--worker_cfg", default="{}", help=argparse.SUPPRESS)
    return p


def _header(result: dict[str, Any]) -> list[str]:
    env = result["env"]
    return [
        f"Device: {env['device_name']}; {env['date']}; torch {env['torch']}, monai {env['monai']}, diffusers "
        f"{env['diffusers']}; torch threads {env['threads']} (OMP_NUM_THREADS={env['omp_num_threads']}); load "
        f"average at start {env['load_average']}.",
        f"Command: `{result['command']}`",
        "",
    ]


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.worker:  # a variant in its own process (peak memory of its own)
        from bench.speed import run_worker_here

        print(json.dumps(run_worker_here(args.worker, json.loads(args.worker_cfg))))
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but CUDA is not available")
    if args.repeats < 3 and not args.in_process:
        print(f"warning: --repeats {args.repeats} < 3: no spread to speak of", file=sys.stderr)
    device = torch.device(args.device)
    out_dir = Path(args.out).resolve()
    result: dict[str, Any] = {"command": command_line("scripts/benchmark.py", argv), "env": environment(device)}
    if args.overhead:
        from bench.overhead import run_overhead_mode

        res, md = run_overhead_mode(args, device)
        result.update(res)
        base = write_result(out_dir, f"overhead_{args.device}_{stamp()}", result, "\n".join(_header(result)) + md)
    elif args.quality_per_compute:
        from bench.qpc import run_qpc_mode

        res, md = run_qpc_mode(args, result["command"])
        result.update(res)
        base = write_result(out_dir, "quality_per_compute", result, "\n".join(_header(result)) + md)
    elif args.smoke_full:
        from bench.smoke_full import run_smoke_full

        res, md = run_smoke_full(args, device)
        result.update(res)
        base = write_result(out_dir, f"smoke_full_{args.device}_{stamp()}", result, "\n".join(_header(result)) + md)
    else:
        from bench.speed import run_speed_mode

        res, md = run_speed_mode(args, device, argv)
        result.update(res)
        base = write_result(out_dir, f"benchmark_{args.device}_{stamp()}", result, "\n".join(_header(result)) + md)
    print(Path(f"{base}.md").read_text())
    print(f"written {base}.json and {base}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
