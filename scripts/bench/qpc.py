"""``--quality_per_compute`` of ``scripts/benchmark.py``: sample quality after fixed CPU-time training budgets and at
several sampling step counts, for each method and objective, judged by a segmenter trained on the real pool.

Steps (each cached in ``--work``, so an interrupted run resumes where it stopped):

1. the judge: the segmentation bundle trained once on the whole demo training pool (128 x 128, channels
   (16, 32, 64, 128), strides (2, 2, 2), 2 residual units, ~900 iterations at batch 8), scored on the demo test slab;
2. per method and objective, one training run of the bundle's ``demo.json`` network at 64 x 64 that exports its EMA
   weights when its CPU time passes each budget (MedDiff-FT fine-tunes the segmentation-guided model of the same
   objective at its smallest budget; its budgets count the fine-tuning, its report adds the base's CPU time);
3. per export and sampler setting: faithfulness Dice and FID on the judge's features (:mod:`bench.qpc_eval`); the
   DDIM reference point only at the largest budget (to keep the study near 2 CPU-hours).

Results go to ``--out`` (``quality_per_compute.json``/``.md``, two plots, sample grids) via :mod:`bench.qpc_report`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from bench.qpc_eval import build_eval_set, evaluate_export, samplers_for
from bench.qpc_train import OBJECTIVES, objective_overrides, train_judge, train_with_budgets

__all__ = ["PLAN", "plan_runs", "run_quality_per_compute", "run_qpc_mode"]

#: (method, objective) runs in order (MedDiff-FT after the segmentation-guided run it fine-tunes)
PLAN = (
    ("seg_guided_diffusion", "ddpm_v"),
    ("seg_guided_diffusion", "ddpm_eps"),
    ("seg_guided_diffusion", "rflow"),
    ("seg_guided_diffusion", "ddpm_eps_minsnr5"),
    ("seg_guided_diffusion", "ddpm_x0"),
    ("siamese_diffusion", "ddpm_eps"),
    ("siamese_diffusion", "rflow"),
    ("meddiff_ft", "ddpm_eps"),
    ("meddiff_ft", "rflow"),
)


def plan_runs(methods: list[str], objectives: list[str] | None) -> list[tuple[str, str]]:
    """The runs of :data:`PLAN` for ``methods`` (and ``objectives``); a MedDiff-FT run brings its base run."""
    chosen = [(m, o) for m, o in PLAN if m in methods and (objectives is None or o in objectives)]
    for m, o in list(chosen):
        if m == "meddiff_ft" and ("seg_guided_diffusion", o) not in chosen:
            chosen.insert(0, ("seg_guided_diffusion", o))
    return sorted(chosen, key=lambda r: PLAN.index(r) if r in PLAN else len(PLAN))


def _run_name(method: str, objective: str) -> str:
    return f"{method}__{objective}"


def run_quality_per_compute(args: Any, log=print) -> dict[str, Any]:
    """Run (or resume) the whole study; returns the result dict (also written to ``work/qpc_result.json``)."""
    from monai_siamese.evaluation.steps import cached_step
    from monai_siamese.quality import load_segmenter
    from monai_siamese.utils import atomic_write_json

    t_wall, t_cpu = time.perf_counter(), time.process_time()
    work = Path(args.work or Path(args.out) / "work_qpc").resolve()
    budgets_s = [60.0 * b for b in args.budgets]
    size = args.resolution or 64
    size_config = "tiny.json" if args.qpc_tiny else "demo.json"
    size_over = {"spatial_size": [size, size]}
    log(f"quality per compute: work {work}, budgets {args.budgets} CPU-min, {size}x{size}, {size_config}")
    judge_res = train_judge(
        work / "judge",
        iterations=args.judge_iterations,
        batch=8,
        size=args.judge_size,
        channels=args.judge_channels,
        strides=[2] * (len(args.judge_channels) - 1),
        res_units=args.judge_res_units,
    )
    log(f"judge: test Dice {judge_res['test_dice']} ({judge_res['cpu_s']:.0f} CPU-s)")
    judge = load_segmenter(judge_res["weights"], device="cpu")
    eval_set = build_eval_set(args.val_seeds, args.train_masks)
    result: dict[str, Any] = {
        "config": {
            "budgets_cpu_min": list(args.budgets),
            "size": size,
            "size_config": size_config,
            "objectives": {k: v for k, v in OBJECTIVES.items()},
            "eval_samples": len(eval_set.entries),
            "eval_val_samples": int(sum(eval_set.is_val)),
            "fid_reference_images": len(eval_set.pool),
            "torch_threads": torch.get_num_threads(),
        },
        "judge": judge_res,
        "runs": {},
    }
    for method, objective in plan_runs(args.methods, args.objectives):
        name = _run_name(method, objective)
        over: dict[str, Any] = {**objective_overrides(objective), **size_over}
        base_cpu = 0.0
        if args.qpc_report_only and not (work / name / "result.json").is_file():
            log(f"{name}: not trained yet, left out of the report")
            continue
        if method == "meddiff_ft":
            base = result["runs"][_run_name("seg_guided_diffusion", objective)]["train"]
            first = base["exports"][0]
            over["pretrained_path"] = first["path"]
            base_cpu = float(first["cpu_s"])
        log(f"{name}: training to {args.budgets} CPU-min")
        tr = train_with_budgets(method, objective, work / name, budgets_s, over, size_config=size_config)
        run: dict[str, Any] = {"method": method, "objective": objective, "train": tr, "base_cpu_s": base_cpu}
        run["evals"] = []
        for i, ex in enumerate(tr["exports"]):  # DDIM reference point at the largest budget only (CPU)
            settings = samplers_for(objective, args.sampling_steps, reference=i == len(tr["exports"]) - 1)
            folder = work / name / f"eval_{int(ex['budget_s'])}"
            if args.qpc_report_only and not (folder / "result.json").is_file():
                continue

            def step(ex=ex, settings=settings, folder=folder) -> dict:
                return evaluate_export(
                    method, over, ex["path"], judge, eval_set, settings, folder / "samples", size_config=size_config
                )

            ev = cached_step(folder, step, log=log)
            ev.update({"budget_s": ex["budget_s"], "iteration": ex["iteration"], "train_cpu_s": ex["cpu_s"]})
            ev.update({"train_wall_s": ex["wall_s"], "total_train_cpu_s": ex["cpu_s"] + base_cpu})
            run["evals"].append(ev)
            best = max(ev["settings"].values(), key=lambda s: s["faithfulness_val"])
            log(
                f"{name} @ {ex['budget_s'] / 60:.0f} CPU-min (it {ex['iteration']}): best faithfulness "
                f"{best['faithfulness_val']:.3f} ({best['sampler']} {best['steps']}), FID "
                + ", ".join(f"{k} {v['fid']:.1f}" for k, v in ev["settings"].items())
            )
        result["runs"][name] = run
        atomic_write_json(work / "qpc_result.json", result)
    result["cpu_s"] = time.process_time() - t_cpu
    result["wall_s"] = time.perf_counter() - t_wall
    atomic_write_json(work / "qpc_result.json", result)
    return json.loads(json.dumps(result, default=str))


def run_qpc_mode(args: Any, command: str) -> tuple[dict[str, Any], str]:
    """``--quality_per_compute``: run (or resume) the study, then write its plots and grids into ``--out``; returns
    the result and its Markdown."""
    from bench.qpc_eval import eval_reals
    from bench.qpc_report import plot_qpc, qpc_markdown, write_grids

    result = run_quality_per_compute(args)
    out_dir = Path(args.out).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    figs = plot_qpc(result, out_dir)
    work = Path(args.work or out_dir / "work_qpc")
    size_config = "tiny.json" if args.qpc_tiny else "demo.json"
    reals = eval_reals(args.val_seeds, args.train_masks, args.resolution or 64, size_config)
    result["grids"] = write_grids(result, work, out_dir, reals=reals)
    for k, v in result["grids"].items():
        label = f"samples: {k}" + (f" ({v['run']} {v['setting']}, {v['budget_min']:g} CPU-min)" if "run" in v else "")
        figs[label] = v["path"]
    return result, qpc_markdown(result, command, figs)
