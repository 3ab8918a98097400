"""Collect the per-run results of an evaluation folder into tables, figures and ``report.md``."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from monai_siamese.evaluation.config import (
    REAL_ARM,
    EvaluationConfig,
    draw_seeds,
    draw_tag,
    run_tag,
    training_seeds,
)
from monai_siamese.evaluation.steps import RESULT_FILE
from monai_siamese.utils import atomic_path, atomic_write_json, atomic_write_text

__all__ = ["mean_std", "collect_results", "usefulness_table", "write_report", "plot_dice_bars", "sample_grid"]


def mean_std(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean, sample standard deviation (0 for one value) and count of the finite ``values``."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if v.size == 0:
        return float("nan"), float("nan"), 0
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0, int(v.size)


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def collect_results(out: str | os.PathLike, cfg: EvaluationConfig) -> dict[str, Any]:
    """Gather every finished run of ``out`` (missing runs are simply absent) into one JSON-able dict.

    Returns:
        ``{"judge": ..., "runs": [...], "quality": [...], "summary": {...}, "timing": {...}}`` where ``summary``
        holds, per regime and arm, mean/std over runs (draws x seeds) of Dice and IoU per class and, for the
        synthetic arms, the paired difference to the real arm of the same draw and seed.
    """
    out = Path(out)
    arms = [REAL_ARM, *cfg.methods]
    runs, quality = [], []
    timing: dict[str, float] = {}

    def add_time(key: str, res: dict | None) -> None:
        if res and "seconds" in res:
            timing[key] = round(timing.get(key, 0.0) + float(res["seconds"]), 1)

    judge = {
        "test": _read(out / "judge" / "test" / RESULT_FILE),
        "real_vs_real": _read(out / "judge" / "real_vs_real" / RESULT_FILE),
    }
    add_time("judge segmenter training", _read(out / "judge" / "train" / RESULT_FILE))
    for n in cfg.regimes:
        for d in draw_seeds(cfg):
            add_time("slice draws", _read(out / "draws" / draw_tag(n, d) / RESULT_FILE))
            for m in cfg.methods:
                g = out / "generators" / m / draw_tag(n, d)
                add_time("generator training", _read(g / "train" / RESULT_FILE))
                add_time("sampling", _read(g / "sample" / RESULT_FILE))
                q = _read(g / "quality" / RESULT_FILE)
                add_time("quality metrics", q)
                if q:
                    quality.append({"method": m, "regime": n, "draw": d, **q})
            for seed in training_seeds(cfg, d):
                tag = run_tag(n, d, seed)
                for arm in arms:
                    add_time("segmentation training", _read(out / "runs" / arm / tag / "train" / RESULT_FILE))
                    res = _read(out / "runs" / arm / tag / "test" / RESULT_FILE)
                    add_time("testing", res)
                    if res:
                        runs.append(
                            {"regime": n, "draw": d, "seed": seed, "arm": arm, "dice": res["dice"], "iou": res["iou"]}
                        )
    keys = [*cfg.class_names, "mean"]
    summary: dict[str, Any] = {}
    for n in cfg.regimes:
        summary[str(n)] = {}
        base = {(r["draw"], r["seed"]): r for r in runs if r["regime"] == n and r["arm"] == REAL_ARM}
        for arm in arms:
            rs = [r for r in runs if r["regime"] == n and r["arm"] == arm]
            if not rs:
                continue
            entry: dict[str, Any] = {"runs": sorted([r["draw"], r["seed"]] for r in rs)}
            for metric in ("dice", "iou"):
                entry[metric] = {k: mean_std([r[metric][k] for r in rs]) for k in keys}
            if arm != REAL_ARM:
                paired = [(r, base[(r["draw"], r["seed"])]) for r in rs if (r["draw"], r["seed"]) in base]
                entry["delta_dice"] = {k: mean_std([a["dice"][k] - b["dice"][k] for a, b in paired]) for k in keys}
                entry["runs_better"] = [sum(a["dice"]["mean"] > b["dice"]["mean"] for a, b in paired), len(paired)]
            summary[str(n)][arm] = entry
    quality_summary: dict[str, Any] = {}
    for m in cfg.methods:
        for n in cfg.regimes:
            qs = [q for q in quality if q["method"] == m and q["regime"] == n]
            if not qs:
                continue
            s = {"faithfulness_dice": {k: mean_std([q["faithfulness_dice"][k] for q in qs]) for k in keys}}
            for k in ("fid", "kid", "ms_ssim", "fid_inception", "kid_inception"):
                if k in qs[0]:
                    s[k] = mean_std([q[k] for q in qs])
            s["pairs"] = int(np.mean([q["pairs"] for q in qs]))
            quality_summary.setdefault(m, {})[str(n)] = s
    return {
        "judge": judge,
        "runs": runs,
        "quality": quality,
        "summary": summary,
        "quality_summary": quality_summary,
        "timing": timing,
    }


def _fmt(ms: Sequence[float] | None, digits: int = 3, sign: bool = False) -> str:
    if not ms or ms[2] == 0 or not math.isfinite(ms[0]):
        return "n/a"
    f = f"{{:{'+' if sign else ''}.{digits}f}}"
    if ms[2] == 1:  # one run: no spread to show
        return f.format(ms[0])
    return f"{f.format(ms[0])} ± {ms[1]:.{digits}f}"


def usefulness_table(results: Mapping[str, Any], cfg: EvaluationConfig, metric: str = "dice") -> str:
    """Markdown table: one row per regime and arm, mean ± std over runs of ``metric`` per class and their mean,
    and, for Dice, the paired difference to the real-only arm."""
    cols = [*cfg.class_names, "mean"]
    head = ["N real", "arm", *[f"{c} {'IoU' if metric == 'iou' else 'Dice'}" for c in cols]]
    if metric == "dice":
        head += ["Δ mean Dice vs real (paired)", "runs better"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for n, arms in results["summary"].items():
        for arm, e in arms.items():
            row = [n, arm if arm == REAL_ARM else f"real + {arm}"]
            row += [_fmt(e[metric][c]) for c in cols]
            if metric == "dice":
                if arm == REAL_ARM:
                    row += ["", ""]
                else:
                    better, total = e["runs_better"]
                    row += [_fmt(e["delta_dice"]["mean"], sign=True), f"{better}/{total}"]
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def quality_table(results: Mapping[str, Any], cfg: EvaluationConfig) -> str:
    """Markdown table of faithfulness, FID/KID and MS-SSIM per method and regime (mean ± std over draws), with the
    real reference rows."""
    cols = [*cfg.class_names, "mean"]
    inception = any("fid_inception" in q for m in results["quality_summary"].values() for q in m.values())
    head = ["set", "N real", "pairs", *[f"faithfulness {c}" for c in cols], "FID (seg.)", "KID (seg.)", "MS-SSIM"]
    if inception:
        head += ["FID (Inception)", "KID (Inception)"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for m, per_n in results["quality_summary"].items():
        for n, s in per_n.items():
            row = [m, n, str(s["pairs"]), *[_fmt(s["faithfulness_dice"][c]) for c in cols]]
            row += [_fmt(s["fid"], 2), _fmt(s["kid"], 3), _fmt(s["ms_ssim"], 3)]
            if inception:
                row += [_fmt(s.get("fid_inception"), 2), _fmt(s.get("kid_inception"), 3)]
            lines.append("| " + " | ".join(row) + " |")
    judge = results["judge"]
    if judge.get("test"):
        t = judge["test"]
        row = ["real test slices (judge's Dice)", "pool", str(t["slices"]), *[f"{t['dice'][c]:.3f}" for c in cols]]
        rr = judge.get("real_vs_real") or {}
        row += [f"{rr['fid']:.2f}" if rr else "", f"{rr['kid']:.3f}" if rr else "", ""]
        if inception:
            row += [f"{rr.get('fid_inception', float('nan')):.2f}", f"{rr.get('kid_inception', float('nan')):.3f}"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def plot_dice_bars(results: Mapping[str, Any], cfg: EvaluationConfig, path: str | os.PathLike) -> str | None:
    """Bar chart of test Dice per regime (groups) and arm (bars), mean ± std over runs with the runs as dots;
    one panel for the mean over classes and one per class. Written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = results["summary"]
    if not summary:
        return None
    arms = [REAL_ARM, *cfg.methods]
    panels = ["mean", *cfg.class_names]
    regimes = [n for n in summary if summary[n]]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels) + 1, 3.6), squeeze=False)
    width = 0.8 / len(arms)
    colours = plt.get_cmap("tab10")
    for ax, panel in zip(axes[0], panels):
        for j, arm in enumerate(arms):
            xs, means, stds = [], [], []
            for i, n in enumerate(regimes):
                e = summary[n].get(arm)
                if not e:
                    continue
                x = i + (j - (len(arms) - 1) / 2) * width
                m, s, _ = e["dice"][panel]
                xs.append(x)
                means.append(m)
                stds.append(s)
                pts = [r["dice"][panel] for r in results["runs"] if str(r["regime"]) == n and r["arm"] == arm]
                ax.scatter([x] * len(pts), pts, s=9, color="black", zorder=3)
            ax.bar(xs, means, width * 0.95, yerr=stds, capsize=3, color=colours(j), label=arm, alpha=0.85)
        ax.set_xticks(range(len(regimes)))
        ax.set_xticklabels([f"N={n}" for n in regimes])
        ax.set_title(f"{panel} Dice" if panel != "mean" else "mean Dice (foreground classes)")
        ax.set_ylim(0, 1)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("test Dice (mean ± std over runs)")
    axes[0][-1].legend(loc="lower right", fontsize=8)
    fig.suptitle("Segmentation on held-out real test slices: real only vs real + synthetic", fontsize=10)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return str(path)


def sample_grid(
    synthetic_datalist: str | os.PathLike,
    judge: Any,
    path: str | os.PathLike,
    rows: int = 4,
    samples: int = 4,
) -> str | None:
    """PNG grid, one row per conditioning mask: real slice with the mask overlaid | generated samples | the
    judge's segmentation of the first sample overlaid on it (what faithfulness scores)."""
    from monai_siamese.data import load_datalist
    from monai_siamese.data.visualize import grid, overlay, save_png, to_uint8
    from monai_siamese.data import image_shape
    from monai_siamese.evaluation.steps import load_images

    entries = load_datalist(synthetic_datalist, "training")
    if not entries:
        return None
    groups: dict[int, list[dict]] = {}
    for e in entries:
        groups.setdefault(int(e.get("mask_index", -1)), []).append(e)
    chosen = [g[:samples] for _, g in sorted(groups.items())][:rows]
    size = image_shape(entries[0]["image"])
    tiles = []
    for group in chosen:
        data = load_images(judge.settings, group, spatial_size=size)
        row = []
        src = group[0].get("source_image")
        if src and os.path.exists(src):
            real = load_images(judge.settings, [{"image": src, "label": group[0]["label"]}], spatial_size=size)
            row.append(overlay(real["image"][0], data["label"][0]))
        else:
            row.append(overlay(data["image"][0] * 0 - 1, data["label"][0]))
        row += [to_uint8(img) for img in data["image"]]
        pred = judge.predict(data["image"][:1])
        row.append(overlay(data["image"][0], pred[0]))
        tiles.append(row)
    scale = max(1, 128 // max(size))  # small images are shown enlarged (nearest)
    if scale > 1:
        tiles = [[t.repeat(scale, 0).repeat(scale, 1) for t in r] for r in tiles]
    return save_png(grid(tiles), path)


def _draw_text(cfg: EvaluationConfig) -> str:
    if cfg.draws is None:
        return f"one draw per seed, seeds {cfg.seeds}, each draw with its own generators"
    return f"draws {cfg.draws}, each trained with segmentation seeds {cfg.seeds}; one generator per regime and draw"


def _timing_table(results: Mapping[str, Any], wall_seconds: float | None) -> str:
    lines = ["| stage | seconds |", "| --- | --- |"]
    for k, v in results["timing"].items():
        lines.append(f"| {k} | {v:.0f} |")
    lines.append(f"| sum of the stages | {sum(results['timing'].values()):.0f} |")
    if wall_seconds is not None:
        lines.append(f"| **wall time of this invocation** (resumed stages count 0) | {wall_seconds:.0f} |")
    return "\n".join(lines)


def _verdict(results: Mapping[str, Any], cfg: EvaluationConfig) -> str:
    """One factual sentence per method and regime: paired mean Dice difference and its spread."""
    out = []
    for n, arms in results["summary"].items():
        for arm, e in arms.items():
            if arm == REAL_ARM:
                continue
            d, s, k = e["delta_dice"]["mean"]
            better, total = e["runs_better"]
            first = cfg.class_names[0]
            dc = e["delta_dice"][first]
            clear = abs(d) > s and total >= 2
            out.append(
                f"- N = {n}, real + {arm}: mean Dice {d:+.3f} ± {s:.3f} against real only (better in {better}/{total} "
                f"paired runs; {first} {dc[0]:+.3f} ± {dc[1]:.3f})"
                + ("" if clear else " — within the run-to-run spread, not a measured effect")
                + "."
            )
    return "\n".join(out)


def write_report(
    out: str | os.PathLike,
    cfg: EvaluationConfig,
    results: Mapping[str, Any],
    command: str,
    wall_seconds: float | None = None,
) -> str:
    """Write ``results.json``, the figures and ``report.md`` into ``out`` (each atomically); return the report path."""
    out = Path(out)
    figs = out / "figures"
    figs.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "results.json", results)
    bars = plot_dice_bars(results, cfg, figs / "dice_by_regime.png")
    grids = []
    judge_model = out / "judge" / "models" / "model_final.pt"
    if judge_model.is_file():
        from monai_siamese.quality import load_segmenter

        judge = load_segmenter(judge_model, device=cfg.device)
        for m in cfg.methods:
            for n in cfg.regimes:
                d = draw_seeds(cfg)[0]
                dl = out / "generators" / m / draw_tag(n, d) / "synthetic" / "datalist.json"
                if dl.is_file():
                    p = sample_grid(dl, judge, figs / f"samples_{m}_{draw_tag(n, d)}.png", cfg.grid_masks, 4)
                    if p:
                        grids.append((m, n, d, Path(p).name))
    from monai_siamese.data.datalist import read_datalist_file
    from monai_siamese.data.demo import DEMO_VERSION

    data_info = read_datalist_file(cfg.datalist) if cfg.datalist and Path(cfg.datalist).is_file() else {}
    demo = data_info.get("version") == DEMO_VERSION
    config_json = json.dumps(cfg.to_dict(), indent=2)
    md = [
        "# Synthetic data for segmentation: evaluation report",
        "",
        (
            "**Demo data** (MNI152 2009 T1 template slices, CSF/GM/WM): a plumbing-scale run on a CPU, not a "
            "benchmark of the methods."
            if demo
            else f"Data: {data_info.get('name', 'datalist')} (`{cfg.datalist}`)."
        ),
        "",
        "Command:",
        "",
        f"```bash\n{command}\n```",
        "",
        f"Regimes N = {', '.join(map(str, cfg.regimes))} real training slices, drawn once per regime and draw seed "
        f"({_draw_text(cfg)}); every arm of a draw uses the same slices, the same seeds and the same budget: "
        f"segmentation {cfg.seg_iterations} iterations at batch {cfg.seg_batch_size}, {cfg.seg_spatial_size} x "
        f"{cfg.seg_spatial_size}; in the synthetic arms {cfg.synthetic_ratio:.0%} of every batch is synthetic "
        f"(replacing real slots, not adding steps). Generators are trained only on their draw's N pairs "
        f"({cfg.gen_iterations or 'config default'} iterations) and sample {cfg.samples_per_mask} images per mask "
        f"(mask source: `{cfg.mask_source}`). Test: the `{cfg.test_split}` split, which no generator saw. "
        "Mean Dice = mean over the foreground classes; ± = standard deviation over runs; Δ = paired difference "
        "to the real-only run of the same draw and seed.",
        "",
        "## Usefulness: Dice on the held-out real test split",
        "",
        usefulness_table(results, cfg, "dice"),
        "",
        "IoU:",
        "",
        usefulness_table(results, cfg, "iou"),
        "",
        _verdict(results, cfg),
        "",
    ]
    if bars:
        md += [f"![Dice by regime](figures/{Path(bars).name})", ""]
    md += [
        "## Synthetic data quality (judged by a segmenter trained on the whole real pool)",
        "",
        "Faithfulness: Dice between the judge's segmentation of a generated image and its conditioning mask. "
        "FID/KID: between the judge's pooled bottleneck features of the synthetic images and of the real pool "
        "(both at the generated size); KID is the less biased of the two at these set sizes. MS-SSIM: mean over "
        "pairs of samples of the same mask (1 = identical). The last row gives the judge's own Dice on the real "
        "test slices and the FID/KID between the real test slab and the real pool, for scale.",
        "",
        quality_table(results, cfg),
        "",
    ]
    for m, n, d, name in grids:
        md += [
            f"Samples of `{m}` (N = {n}, draw {d}); each row: real slice with its mask | generated samples | "
            f"judge's segmentation of the first sample:",
            "",
            f"![samples {m}](figures/{name})",
            "",
        ]
    md += [
        "## Time",
        "",
        _timing_table(results, wall_seconds),
        "",
        "## Settings",
        "",
        f"```json\n{config_json}\n```",
        "",
        "Per-run results: `runs/<arm>/N<N>_d<draw>_s<seed>/test/result.json`, `generators/<method>/N<N>_d<draw>/`; all "
        "numbers above: `results.json`.",
        "",
    ]
    report = out / "report.md"
    atomic_write_text(report, "\n".join(md))
    return str(report)
