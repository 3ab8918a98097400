"""Report of the quality-per-compute study: the table, the done-means checks, two plots and sample grids."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from bench.output import fmt, table

__all__ = ["rows", "checks", "qpc_markdown", "plot_qpc", "write_grids"]

TODAY = ("seg_guided_diffusion", "ddpm_v", "ddim_25")


def rows(result: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """One flat record per run x budget x sampler setting."""
    for name, run in result["runs"].items():
        for ev in run["evals"]:
            for key, s in ev["settings"].items():
                yield {
                    "run": name,
                    "method": run["method"],
                    "objective": run["objective"],
                    "budget_min": ev["budget_s"] / 60.0,
                    "iteration": ev["iteration"],
                    "train_cpu_s": ev["train_cpu_s"],
                    "train_wall_s": ev["train_wall_s"],
                    "total_train_cpu_s": ev["total_train_cpu_s"],
                    "setting": key,
                    **s,
                }


def _ref_key(objective: str) -> str:
    return "euler_50" if objective == "rflow" else "ddim_50"


def checks(result: dict[str, Any]) -> dict[str, Any]:
    """The done-means of issue 15: at each budget, the best segmentation-guided objective's FID against today's demo
    setting (v-prediction DDPM, DDIM 25), and whether its faithfulness at <= 8 steps is within 0.01 of its 50 steps."""
    recs = [r for r in rows(result) if r["method"] == TODAY[0]]
    out: dict[str, Any] = {}
    for b in sorted({r["budget_min"] for r in recs}):
        at = [r for r in recs if r["budget_min"] == b]
        today = [r for r in at if r["objective"] == TODAY[1] and r["setting"] == TODAY[2]]
        if not today:
            continue
        best = min(at, key=lambda r: r["fid"])
        own = [r for r in at if r["objective"] == best["objective"]]
        fifty = [r for r in own if r["steps"] == 50 and r["sampler"] != "ddim"] or [r for r in own if r["steps"] == 50]
        few = [r for r in own if r["steps"] <= 8]
        best_few = max(few, key=lambda r: r["faithfulness_val"]) if few else None
        out[f"{b:g}"] = {
            "today_fid": today[0]["fid"],
            "today_faithfulness": today[0]["faithfulness_val"],
            "best_objective": best["objective"],
            "best_setting": best["setting"],
            "best_fid": best["fid"],
            "fid_ratio": best["fid"] / today[0]["fid"],
            "fid_ratio_ok": best["fid"] <= 0.5 * today[0]["fid"],
            "faithfulness_50": fifty[0]["faithfulness_val"] if fifty else None,
            "faithfulness_le8": best_few["faithfulness_val"] if best_few else None,
            "faithfulness_le8_setting": best_few["setting"] if best_few else None,
            "faithfulness_le8_ok": bool(
                fifty and best_few and best_few["faithfulness_val"] >= fifty[0]["faithfulness_val"] - 0.01
            ),
        }
    return out


def qpc_markdown(result: dict[str, Any], command: str, figures: dict[str, str]) -> str:
    """The Markdown report."""
    cfg, judge = result["config"], result["judge"]
    td = judge["test_dice"]
    lines = [
        "# Quality per compute",
        "",
        f"Command: `{command}`",
        "",
        f"Generators: each bundle's `demo.json` network at {cfg['size']}x{cfg['size']} on the MNI152 demo data, one "
        f"training run per method and objective (torch threads {cfg['torch_threads']}), EMA weights exported when the "
        f"run's CPU time passed {cfg['budgets_cpu_min']} CPU-minutes (the run's `num_iterations` was calibrated to the "
        "largest budget, so earlier exports are snapshots of the same schedule). MedDiff-FT fine-tunes the "
        "segmentation-guided model of the same objective at its first budget; its 'total CPU-min' adds that base.",
        "",
        f"Judge: segmentation bundle trained on the whole demo training pool ({judge['train_slices']} slices) at "
        f"{judge['size']}x{judge['size']}, channels {tuple(judge['channels'])}, strides {tuple(judge['strides'])}, "
        f"{judge['num_res_units']} residual units, {judge['iterations']} iterations at batch {judge['batch']} "
        f"({fmt(judge['cpu_s'] / 60, 1)} CPU-min). Mean Dice on the demo test slab ({judge['test_slices']} slices): "
        f"**{fmt(td['mean'], 3)}** (CSF {fmt(td['CSF'], 3)}, GM {fmt(td['GM'], 3)}, WM {fmt(td['WM'], 3)})"
        + (
            " - meets the >= 0.85 bar."
            if td["mean"] >= 0.85
            else " - BELOW the 0.85 bar: faithfulness is indicative only."
        ),
        "",
        f"Evaluation: {cfg['eval_samples']} samples per setting ({cfg['eval_val_samples']} from the demo validation "
        f"masks x seeds, the rest from training-pool masks), the same masks and noise for every setting. Faithfulness ="
        " the judge's mean foreground Dice (CSF, GM, WM) against the conditioning mask, on the validation samples "
        "('faith. val') and on all ('faith. all'); FID = Frechet distance of the judge's pooled bottleneck features, "
        f"all samples vs the {cfg['fid_reference_images']} real pool images (small sets: compare values within this "
        "table only).",
    ]
    ref = next((ev["real_reference"] for run in result["runs"].values() for ev in run["evals"]), None)
    if ref:
        lines += [
            "",
            f"Real images of the same masks: faith. val {fmt(ref['faithfulness_val'], 3)}, faith. all "
            f"{fmt(ref['faithfulness_all'], 3)}, FID {fmt(ref['fid_eval_reals_vs_pool'], 3)} (a floor: they are part "
            "of the pool).",
        ]
    chk = checks(result)
    if chk:
        lines += ["", "## Done-means checks (segmentation-guided)", ""]
        crow = []
        for b, c in chk.items():
            crow.append(
                [
                    b,
                    fmt(c["today_fid"], 3),
                    f"{c['best_objective']} {c['best_setting']}",
                    fmt(c["best_fid"], 3),
                    f"{fmt(c['fid_ratio'])} ({'ok' if c['fid_ratio_ok'] else 'NOT <= 0.5'})",
                    f"{fmt(c['faithfulness_le8'], 3)} ({c['faithfulness_le8_setting']}) vs {fmt(c['faithfulness_50'], 3)}"
                    f" ({'ok' if c['faithfulness_le8_ok'] else 'NOT within 0.01'})",
                ]
            )
        lines += table(
            [
                "budget CPU-min",
                "today's FID (v-pred, DDIM 25)",
                "lowest-FID objective",
                "its FID",
                "FID ratio",
                "its faith. val at <= 8 steps vs 50",
            ],
            crow,
        )
    lines += ["", "## Results", ""]
    trows = []
    for r in rows(result):
        trows.append(
            [
                r["method"],
                r["objective"],
                fmt(r["budget_min"], 0),
                fmt(r["total_train_cpu_s"] / 60, 1),
                r["iteration"],
                fmt(r["train_cpu_s"], 0),
                fmt(r["train_wall_s"], 0),
                r["sampler"],
                r["steps"],
                fmt(r["faithfulness_val"], 3),
                fmt(r["faithfulness_all"], 3),
                fmt(r["fid"], 3),
                fmt(r["sampling_cpu_s_per_image"], 3),
                fmt(r["sampling_wall_s_per_image"], 3),
            ]
        )
    lines += table(
        [
            "method",
            "objective",
            "budget CPU-min",
            "total CPU-min",
            "iterations",
            "train CPU-s",
            "train wall-s",
            "sampler",
            "steps",
            "faith. val",
            "faith. all",
            "FID",
            "sample CPU-s/img",
            "sample wall-s/img",
        ],
        trows,
    )
    if figures:
        lines += ["", "## Figures", ""]
        lines += [f"![{k}]({Path(v).name})" for k, v in figures.items()]
    lines += [
        "",
        f"Study total: {fmt(result.get('cpu_s', float('nan')) / 60, 1)} CPU-min, "
        f"{fmt(result.get('wall_s', float('nan')) / 60, 1)} wall-min (this invocation).",
    ]
    return "\n".join(lines) + "\n"


def _save_figure(fig: Any, legend_axes: Any, path: Path) -> str:
    """Legend on ``legend_axes`` (when anything is labelled), tight layout, ``path`` written at 110 dpi, figure closed;
    returns ``path``."""
    import matplotlib.pyplot as plt

    if legend_axes.get_legend_handles_labels()[0]:
        legend_axes.legend(fontsize=6, loc="upper right")
    fig.tight_layout()
    fig.savefig(str(path), dpi=110)
    plt.close(fig)
    return str(path)


def plot_qpc(result: dict[str, Any], out_dir: str | Path) -> dict[str, str]:
    """``quality_vs_training_cpu.png`` and ``quality_vs_sampling_steps.png``; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    recs = list(rows(result))
    runs = list(dict.fromkeys(r["run"] for r in recs))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    figs = {}
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for i, run in enumerate(runs):
        rr = [r for r in recs if r["run"] == run]
        for few, style in ((False, "-o"), (True, "--x")):
            pick = [r for r in rr if (r["steps"] == 8) == few and r["setting"] != "ddim_25"]
            pick = [r for r in pick if few or r["setting"] == _ref_key(r["objective"])]
            pick.sort(key=lambda r: r["total_train_cpu_s"])
            if not pick:
                continue
            x = [r["total_train_cpu_s"] / 60 for r in pick]
            label = f"{run.replace('__', ' ')} ({'8 steps' if few else '50 steps'})"
            axes[0].plot(x, [r["faithfulness_val"] for r in pick], style, color=colors[i % len(colors)], label=label)
            axes[1].plot(x, [r["fid"] for r in pick], style, color=colors[i % len(colors)], label=label)
    axes[0].set(xlabel="training CPU-minutes", ylabel="faithfulness Dice (validation masks)", title="faithfulness")
    axes[1].set(xlabel="training CPU-minutes", ylabel="FID (judge features)", title="FID (lower is better)")
    figs["quality vs training CPU-time"] = _save_figure(fig, axes[1], out_dir / "quality_vs_training_cpu.png")
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for i, run in enumerate(runs):
        rr = [r for r in recs if r["run"] == run]
        last = max(r["budget_min"] for r in rr)
        rr = [r for r in rr if r["budget_min"] == last]
        main = sorted([r for r in rr if r["sampler"] in ("dpmpp_2m", "euler")], key=lambda r: r["steps"])
        c = colors[i % len(colors)]
        label = f"{run.replace('__', ' ')} @ {last:g} CPU-min"
        axes[0].plot([r["steps"] for r in main], [r["faithfulness_val"] for r in main], "-o", color=c, label=label)
        axes[1].plot([r["steps"] for r in main], [r["fid"] for r in main], "-o", color=c, label=label)
        for r in rr:
            if r["sampler"] == "ddim":
                axes[0].plot([r["steps"]], [r["faithfulness_val"]], "s", color=c, mfc="none")
                axes[1].plot([r["steps"]], [r["fid"]], "s", color=c, mfc="none")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xticks([4, 8, 16, 25, 50])
        ax.set_xticklabels(["4", "8", "16", "25", "50"])
    axes[0].set(xlabel="sampling steps (DPM-Solver++ 2M / Euler; squares: DDIM)", ylabel="faithfulness Dice (val)")
    axes[1].set(xlabel="sampling steps", ylabel="FID (judge features)")
    figs["quality vs sampling steps"] = _save_figure(fig, axes[1], out_dir / "quality_vs_sampling_steps.png")
    return figs


def _upscale(tile, factor: int):
    import numpy as np

    return np.repeat(np.repeat(tile, factor, axis=0), factor, axis=1)


def write_grids(
    result: dict[str, Any],
    work: str | Path,
    out_dir: str | Path,
    reals: torch.Tensor | None = None,
    rows_per_grid: int = 8,
    upscale: int = 3,
    extra: dict[str, tuple[str, float, str]] | None = None,
) -> dict[str, Any]:
    """Sample grids at the largest budget: one per chosen setting (best and worst by FID, the best <= 8 steps, today's
    demo setting, and ``extra`` name -> (run, budget CPU-min, setting)), and ``grid_comparison.png`` with one row per
    mask: ``mask | <each chosen setting> | real image`` (same masks and noise in every column). Returns name -> info.

    Args:
        result: the study's result.
        work: its work folder (the saved samples).
        out_dir: output folder.
        reals: the real images of the evaluation masks (the last column), optional.
        rows_per_grid: masks shown.
        upscale: pixel repetition of each tile.
        extra: further settings to show.
    """
    import numpy as np

    from monai_siamese.data.visualize import grid, label_to_rgb, save_png, to_uint8

    recs = [r for r in rows(result) if not math.isnan(r["fid"])]
    if not recs:
        return {}
    last = max(r["budget_min"] for r in recs)
    at = [r for r in recs if r["budget_min"] == last]
    pick: dict[str, Any] = {}
    today = [r for r in at if (r["method"], r["objective"], r["setting"]) == TODAY]
    if today:
        pick["today"] = today[0]
    pick["best"] = min(at, key=lambda r: r["fid"])
    pick["best_le8_steps"] = min((r for r in at if r["steps"] <= 8), key=lambda r: r["fid"], default=None)
    pick["worst"] = max(at, key=lambda r: r["fid"])
    for name, (run, budget, setting) in (extra or {}).items():
        hit = [r for r in recs if r["run"] == run and r["budget_min"] == budget and r["setting"] == setting]
        if hit:
            pick[name] = hit[0]
    out: dict[str, Any] = {}
    columns, labels = [], None
    for name, r in pick.items():
        if r is None:
            continue
        f = Path(work) / r["run"] / f"eval_{int(round(r['budget_min'] * 60))}" / "samples" / f"{r['setting']}.pt"
        if not f.is_file():
            continue
        d = torch.load(f, weights_only=True)
        n = d["images"].shape[0]
        idx = [round(i * (n - 1) / max(rows_per_grid - 1, 1)) for i in range(min(rows_per_grid, n))]
        labels = d["labels"][idx].long()
        images = d["images"][idx].float()
        columns.append((name, images))
        tiles = [
            [_upscale(label_to_rgb(labels[i]), upscale), _upscale(to_uint8(images[i]), upscale)]
            for i in range(len(idx))
        ]
        path = Path(out_dir) / f"grid_{name}.png"
        save_png(grid(tiles), path)
        out[name] = {
            "path": str(path),
            "run": r["run"],
            "setting": r["setting"],
            "budget_min": r["budget_min"],
            "fid": r["fid"],
            "faithfulness_val": r["faithfulness_val"],
        }
    if columns and labels is not None:
        tiles = []
        for i in range(labels.shape[0]):
            row = [_upscale(label_to_rgb(labels[i]), upscale)]
            row += [_upscale(to_uint8(images[i]), upscale) for _, images in columns]
            if reals is not None:
                n = reals.shape[0]
                j = [round(k * (n - 1) / max(rows_per_grid - 1, 1)) for k in range(min(rows_per_grid, n))][i]
                row.append(_upscale(to_uint8(reals[j]), upscale))
            tiles.append(row)
        path = Path(out_dir) / "grid_comparison.png"
        save_png(np.asarray(grid(tiles)), path)
        out["comparison"] = {
            "path": str(path),
            "columns": ["mask"] + [c for c, _ in columns] + (["real"] if reals is not None else []),
        }
    return out
