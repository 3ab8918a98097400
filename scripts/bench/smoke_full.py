"""``--smoke_full`` of ``scripts/benchmark.py``: each generator's ``train.json`` at its full size (256 x 256, the
reference channels) for a few iterations at batch 1 with ``num_workers`` 0 on this device, so the GPU configs are
known to build and step: seconds per iteration (wall and CPU), peak memory (each method in its own process) and
FLOPs per training step (forward + backward of the network on one image, ``FlopCounterMode``).

The run is the bundle's ``train#trainer`` with every handler of ``train.json`` (the end-of-run sample grid shrunk to
one mask and two steps); checkpoints and weights go to a scratch folder. MedDiff-FT starts from random weights (no
pretrained file is needed to know that its config steps).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import torch

from bench.output import fmt, run_json_worker, table

__all__ = ["smoke_worker", "run_smoke_full"]


def smoke_worker(wcfg: dict[str, Any]) -> dict[str, Any]:
    """Run ``iterations`` iterations of a bundle's ``train.json`` in this process; returns times, memory, FLOPs."""
    from ignite.engine import Events

    from bench.bundle_setup import PlainLoop, bundle_parser
    from bench.timing import count_flops, peak_memory, reset_memory, sync

    method, device, n = wcfg["method"], torch.device(wcfg["device"]), int(wcfg["iterations"])
    over = {
        "batch_size": 1,
        "num_workers": 0,
        "num_iterations": n,
        "epoch_length": n,
        "sample_masks": 1,
        "sample_steps": 2,
        "checkpoint_interval": 10 * n,
        "validate_data": False,
        **dict(wcfg.get("overrides") or {}),  # tests: a tiny network
    }
    work = Path(wcfg["work_dir"]) / method
    t_build = time.perf_counter()
    parser = bundle_parser(method, ("train.json",), over, work, device)
    trainer = parser.get_parsed_content("train#trainer")
    build_s = time.perf_counter() - t_build
    base = reset_memory(device)
    times: list[dict[str, float]] = []
    clock = {}

    @trainer.on(Events.ITERATION_STARTED)
    def _t0(engine):
        sync(device)
        clock["w"], clock["c"] = time.perf_counter(), time.process_time()

    @trainer.on(Events.ITERATION_COMPLETED)
    def _t1(engine):
        sync(device)
        times.append({"wall_s": time.perf_counter() - clock["w"], "cpu_s": time.process_time() - clock["c"]})

    t0 = time.perf_counter()
    trainer.run()
    run_s = time.perf_counter() - t0
    mem = peak_memory(device)
    key = "unet_def" if method == "siamese_diffusion" else "network_def"
    net = parser.get_parsed_content("network")
    loop = PlainLoop(parser, 1, method, image_weight=0.5, oa_active=True)
    amp = bool(parser.get_parsed_content("amp"))
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        flops = count_flops(loop.step)
    return {
        "method": method,
        "spatial_size": parser.get_parsed_content("spatial_size"),
        "channels": list(parser.get_parsed_content(f"{key}#channels")),
        "batch": 1,
        "iterations": len(times),
        "iteration_times": times,
        "s_per_iteration_wall": times[-1]["wall_s"] if times else float("nan"),
        "s_per_iteration_cpu": times[-1]["cpu_s"] if times else float("nan"),
        "build_s": build_s,
        "run_s_incl_end_handlers": run_s,
        "params": sum(p.numel() for p in net.parameters()),
        "trainable_params": sum(p.numel() for p in net.parameters() if p.requires_grad),
        "flops_per_step": flops,
        "amp": amp,
        "base_mib": base,
        **mem,
    }


def run_smoke_full(args: Any, device: torch.device) -> tuple[dict, str]:
    """Each method in its own process (``--in_process``: in this one); returns the result and its Markdown."""
    import json

    results = {}
    work = str(Path(args.out).resolve() / "work_smoke_full")
    for m in args.methods:
        wcfg = {"method": m, "device": str(device), "iterations": args.smoke_iterations, "work_dir": work}
        if args.in_process:
            r = smoke_worker(wcfg)
        else:
            script = str(Path(__file__).resolve().parents[1] / "benchmark.py")
            r = run_json_worker([sys.executable, script, "--worker", "smoke", "--worker_cfg", json.dumps(wcfg)])
        results[m] = r
        print(
            f"{m}: {fmt(r['s_per_iteration_wall'])} s/iteration (CPU {fmt(r['s_per_iteration_cpu'])} s), peak "
            f"{fmt(r['peak_mib'], 0)} MiB, {fmt(r['flops_per_step'] / 1e9, 1)} GFLOP/step",
            flush=True,
        )
    rows = [
        [
            m,
            f"{r['spatial_size'][0]}x{r['spatial_size'][1]}",
            tuple(r["channels"]),
            f"{r['params'] / 1e6:.1f} M",
            r["iterations"],
            fmt(r["s_per_iteration_wall"]),
            fmt(r["s_per_iteration_cpu"]),
            " / ".join(fmt(t["wall_s"]) for t in r["iteration_times"]),
            fmt(r["peak_mib"], 0),
            fmt(r["flops_per_step"] / 1e9, 1),
            "bf16" if r["amp"] else "fp32",
        ]
        for m, r in results.items()
    ]
    md = [
        f"Full-size smoke run: each generator's `train.json` (reference channels, {args.smoke_iterations} iterations at "
        "batch 1, num_workers 0, every handler; end-of-run grid with 1 mask x 2 steps), each method in its own "
        "process. s/iteration = the last iteration; peak memory = "
        + ("CUDA max_memory_allocated." if device.type == "cuda" else "peak process RSS."),
        "",
        *table(
            [
                "method",
                "size",
                "channels",
                "params",
                "iterations",
                "s/iteration (wall)",
                "s/iteration (CPU)",
                "each iteration wall-s",
                "peak MiB",
                "GFLOP/step",
                "precision",
            ],
            rows,
        ),
    ]
    return {"smoke_full": results}, "\n".join(md) + "\n"
