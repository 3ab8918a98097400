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
    Arm,
    EvaluationConfig,
    draw_seeds,
    draw_tag,
    run_tag,
    source_tag,
    synthetic_arms,
    training_seeds,
)
from monai_siamese.evaluation.steps import RESULT_FILE
from monai_siamese.utils import atomic_path, atomic_write_json, atomic_write_text

__all__ = [
    "mean_std", "ci95", "paired_summary", "load_runs", "collect_results", "usefulness_table", "write_report",
    "plot_dice_bars", "sample_grid",
]  # fmt: skip


def mean_std(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean, sample standard deviation (0 for one value) and count of the finite ``values``."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if v.size == 0:
        return float("nan"), float("nan"), 0
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0, int(v.size)


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def ci95(values: Sequence[float]) -> tuple[float, float, float, int]:
    """Mean and two-sided 95 % t-interval ``(mean, low, high, n)`` of the finite ``values`` (``low = high = mean`` for
    one value)."""
    from scipy import stats

    m, sd, n = mean_std(values)
    if n < 2 or not math.isfinite(m):
        return m, m, m, n
    half = float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
    return m, m - half, m + half, n


def paired_summary(diffs: Sequence[float]) -> str:
    """Paired differences as the report's Δ columns write them: ``mean [low, high]`` (95 % t-interval), then how
    many runs are better (``> 0``) of how many."""
    ci = ci95(diffs)
    return f"{_fmt_ci(ci)} {sum(x > 0 for x in diffs)}/{ci[3]}"


def load_runs(path: str | os.PathLike) -> dict[tuple[str, int, int, int], dict[str, float]]:
    """The ``runs`` records of an evaluation's ``results.json``: ``(arm, regime, draw, seed) -> Dice per class``
    (and ``mean``), to re-read or compare runs."""
    rows = json.loads(Path(path).read_text())["runs"]
    return {(r["arm"], r["regime"], r["draw"], r["seed"]): r["dice"] for r in rows}


def _arms(cfg: EvaluationConfig) -> list[Arm]:
    return [Arm(), *synthetic_arms(cfg)]


def _set_dirs(out: Path, cfg: EvaluationConfig, n: int, d: int) -> list[tuple[str, str, Path]]:
    """(method, mask source, folder) of every synthetic set of a regime and draw."""
    return [
        (m, src, out / "generators" / m / draw_tag(n, d) / "sets" / source_tag(src))
        for m in cfg.methods
        for src in cfg.mask_sources
    ]


def collect_results(out: str | os.PathLike, cfg: EvaluationConfig) -> dict[str, Any]:
    """Gather every finished run of ``out`` (missing runs are simply absent) into one JSON-able dict.

    Returns:
        ``{"judge", "arms", "runs", "quality", "selections", "summary", "quality_summary", "timing"}``: ``runs`` holds
        one record per segmentation run (regime, draw, seed, arm, Dice and IoU per class); ``summary`` per regime and
        arm the mean/std over runs (draws x seeds) of Dice and IoU per class and, for the synthetic arms, the paired
        difference to the real arm of the same draw and seed with its 95 % interval.
    """
    out = Path(out)
    arms = _arms(cfg)
    runs, quality, selections = [], [], []
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
                add_time("generator training", _read(out / "generators" / m / draw_tag(n, d) / "train" / RESULT_FILE))
            for m, src, folder in _set_dirs(out, cfg, n, d):
                add_time("sampling", _read(folder / "sample" / RESULT_FILE))
                q = _read(folder / "quality" / RESULT_FILE)
                add_time("quality metrics", q)
                if q:
                    quality.append({"set": Arm(m, src).set_name, "method": m, "mask_source": src, "regime": n,
                                    "draw": d, **q})  # fmt: skip
                for sel in cfg.selections:
                    r = _read(folder / sel / RESULT_FILE)
                    add_time("pair selection", r)
                    if r:
                        selections.append({"set": Arm(m, src).set_name, "regime": n, "draw": d, **r})
            for seed in training_seeds(cfg, d):
                tag = run_tag(n, d, seed)
                for arm in arms:
                    add_time("segmentation training", _read(out / "runs" / arm.name / tag / "train" / RESULT_FILE))
                    res = _read(out / "runs" / arm.name / tag / "test" / RESULT_FILE)
                    add_time("testing", res)
                    if res:
                        runs.append({"regime": n, "draw": d, "seed": seed, "arm": arm.name, "dice": res["dice"],
                                     "iou": res["iou"]})  # fmt: skip
    keys = [*cfg.class_names, "mean"]
    summary: dict[str, Any] = {}
    for n in cfg.regimes:
        summary[str(n)] = {}
        base = {(r["draw"], r["seed"]): r for r in runs if r["regime"] == n and r["arm"] == REAL_ARM}
        for arm in arms:
            rs = [r for r in runs if r["regime"] == n and r["arm"] == arm.name]
            if not rs:
                continue
            entry: dict[str, Any] = {"label": arm.label, "runs": sorted([r["draw"], r["seed"]] for r in rs)}
            for metric in ("dice", "iou"):
                entry[metric] = {k: mean_std([r[metric][k] for r in rs]) for k in keys}
            if arm.method is not None:
                paired = [(r, base[(r["draw"], r["seed"])]) for r in rs if (r["draw"], r["seed"]) in base]
                entry["delta_dice"] = {k: mean_std([a["dice"][k] - b["dice"][k] for a, b in paired]) for k in keys}
                entry["delta_ci95"] = {k: ci95([a["dice"][k] - b["dice"][k] for a, b in paired]) for k in keys}
                entry["runs_better"] = [sum(a["dice"]["mean"] > b["dice"]["mean"] for a, b in paired), len(paired)]
            summary[str(n)][arm.name] = entry
    quality_summary: dict[str, Any] = {}
    for set_name in dict.fromkeys(q["set"] for q in quality):
        for n in cfg.regimes:
            qs = [q for q in quality if q["set"] == set_name and q["regime"] == n]
            if not qs:
                continue
            s = {"faithfulness_dice": {k: mean_std([q["faithfulness_dice"][k] for q in qs]) for k in keys}}
            for k in ("fid", "kid", "ms_ssim", "fid_inception", "kid_inception"):
                if k in qs[0]:
                    s[k] = mean_std([q[k] for q in qs])
            s["pairs"] = int(np.mean([q["pairs"] for q in qs]))
            quality_summary.setdefault(set_name, {})[str(n)] = s
    return {
        "judge": judge,
        "arms": [{"name": a.name, "label": a.label, "method": a.method, "mask_source": a.mask_source,
                  "selection": a.selection} for a in arms],  # fmt: skip
        "runs": runs,
        "quality": quality,
        "selections": selections,
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


def _fmt_ci(ci: Sequence[float] | None) -> str:
    if not ci or ci[3] == 0 or not math.isfinite(ci[0]):
        return "n/a"
    return f"{ci[0]:+.3f} [{ci[1]:+.3f}, {ci[2]:+.3f}]" if ci[3] > 1 else f"{ci[0]:+.3f}"


def usefulness_table(results: Mapping[str, Any], cfg: EvaluationConfig, metric: str = "dice") -> str:
    """Markdown table: one row per regime and arm, mean ± std over runs of ``metric`` per class and their mean,
    and, for Dice, the paired difference to the real-only arm with its 95 % interval and the runs it improved."""
    cols = [*cfg.class_names, "mean"]
    head = ["N real", "arm", *[f"{c} {'IoU' if metric == 'iou' else 'Dice'}" for c in cols]]
    if metric == "dice":
        head += ["Δ mean Dice vs real, paired [95 % CI]", "runs better"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for n, arms in results["summary"].items():
        for arm, e in arms.items():
            row = [n, e.get("label", arm)]
            row += [_fmt(e[metric][c]) for c in cols]
            if metric == "dice":
                if arm == REAL_ARM:
                    row += ["", ""]
                else:
                    better, total = e["runs_better"]
                    row += [_fmt_ci(e["delta_ci95"]["mean"]), f"{better}/{total}"]
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
    for set_name, per_n in results["quality_summary"].items():
        for n, s in per_n.items():
            row = [set_name, n, str(s["pairs"]), *[_fmt(s["faithfulness_dice"][c]) for c in cols]]
            row += [_fmt(s["fid"], 2), _fmt(s["kid"], 3), _fmt(s["ms_ssim"], 3)]
            if inception:
                row += [_fmt(s.get("fid_inception"), 2), _fmt(s.get("kid_inception"), 3)]
            lines.append("| " + " | ".join(row) + " |")
    t, rr = results["judge"].get("test"), results["judge"].get("real_vs_real") or {}
    if t:
        row = ["real test slices (judge's Dice)", "pool", str(t["slices"]), *[f"{t['dice'][c]:.3f}" for c in cols]]
        row += [f"{rr['fid']:.2f}" if rr else "", f"{rr['kid']:.3f}" if rr else "", ""]
        if inception:
            row += [f"{rr.get('fid_inception', float('nan')):.2f}", f"{rr.get('kid_inception', float('nan')):.3f}"]
        lines.append("| " + " | ".join(row) + " |")
        if rr.get("test_dice_at_size"):  # faithfulness' like-for-like reference (evaluations since 2026-12-07)
            row = [f"real test slices at {'x'.join(map(str, rr['image_size']))} (judge's Dice)", "pool", str(t["slices"])]
            row += [f"{rr['test_dice_at_size'][c]:.3f}" for c in cols]
            lines.append("| " + " | ".join(row + [""] * (len(head) - len(row))) + " |")
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
    arms = [a.name for a in _arms(cfg)]
    panels = ["mean", *cfg.class_names]
    regimes = [n for n in summary if summary[n]]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels) + 2, 4.2), squeeze=False)
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
    axes[0][-1].legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7)
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
    samples: int = 3,
) -> str | None:
    """PNG grid, one row per conditioning mask: the mask | its canvas / source image (when there is one) | generated
    samples | the judge's segmentation of the first sample overlaid on it (what faithfulness scores)."""
    from monai_siamese.data import image_shape, load_datalist
    from monai_siamese.data.visualize import grid, label_to_rgb, overlay, save_png, to_uint8
    from monai_siamese.evaluation.scoring import load_images

    entries = load_datalist(synthetic_datalist, "training")
    if not entries:
        return None
    groups: dict[int, list[dict]] = {}
    for e in entries:
        groups.setdefault(int(e.get("mask_index", -1)), []).append(e)
    chosen = [g[:samples] for _, g in sorted(groups.items())]
    chosen = [chosen[round(i * (len(chosen) - 1) / max(rows - 1, 1))] for i in range(min(rows, len(chosen)))]
    size = image_shape(entries[0]["image"])
    tiles = []
    for group in chosen:
        data = load_images(judge.settings, group, spatial_size=size)
        row = [label_to_rgb(data["label"][0])]
        src = group[0].get("source_image")
        if src and os.path.exists(src):
            real = load_images(judge.settings, [{"image": src, "label": group[0]["label"]}], spatial_size=size)
            row.append(to_uint8(real["image"][0]))
        row += [to_uint8(img) for img in data["image"]]
        pred = judge.predict(data["image"][:1])
        row.append(overlay(data["image"][0], pred[0]))
        tiles.append(row)
    width = max(len(r) for r in tiles)
    tiles = [r + [r[-1] * 0] * (width - len(r)) for r in tiles]
    scale = max(1, 128 // max(size))  # small images are shown enlarged (nearest)
    if scale > 1:
        tiles = [[t.repeat(scale, 0).repeat(scale, 1) for t in r] for r in tiles]
    return save_png(grid(tiles), path)


def _phase_text(cfg: EvaluationConfig) -> str:
    """The synthetic phase of the mixed arms, if the run has one."""
    if float(cfg.synthetic_until) >= 1.0:
        return ""
    return f" in the first {cfg.synthetic_until:.0%} of the iterations, the rest real only"


def _draw_text(cfg: EvaluationConfig) -> str:
    if cfg.draws is None:
        return f"one draw per seed, seeds {cfg.seeds}, each draw with its own generators"
    return f"draws {cfg.draws}, each trained with segmentation seeds {cfg.seeds}; one generator per regime and draw"


def _timing_table(results: Mapping[str, Any], wall_seconds: float | None) -> str:
    lines = ["| stage | seconds |", "| --- | --- |", *[f"| {k} | {v:.0f} |" for k, v in results["timing"].items()]]
    lines.append(f"| sum of the stages | {sum(results['timing'].values()):.0f} |")
    if wall_seconds is not None:
        lines.append(f"| **wall time of this invocation** (resumed stages count 0) | {wall_seconds:.0f} |")
    return "\n".join(lines)


def _verdict(results: Mapping[str, Any], cfg: EvaluationConfig) -> str:
    """One factual sentence per arm and regime: paired mean Dice difference, its 95 % interval, the runs it
    improved, and the first class (CSF on the demo data) on its own."""
    out = []
    for n, arms in results["summary"].items():
        for arm, e in arms.items():
            if arm == REAL_ARM:
                continue
            m, lo, hi, k = e["delta_ci95"]["mean"]
            better, total = e["runs_better"]
            first = cfg.class_names[0]
            dc = e["delta_ci95"][first]
            clear = k >= 2 and (lo > 0 or hi < 0)
            out.append(
                f"- N = {n}, {e.get('label', arm)}: mean Dice {_fmt_ci(e['delta_ci95']['mean'])} against real only "
                f"(better in {better}/{total} paired runs; {first} {_fmt_ci(dc)})"
                + ("" if clear else " — the interval includes 0: not a measured effect")
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
        d = draw_seeds(cfg)[0]
        for n in cfg.regimes:
            for m, src, folder in _set_dirs(out, cfg, n, d):
                dl = folder / "synthetic" / "datalist.json"
                if dl.is_file():
                    name = f"samples_{Arm(m, src).set_name.replace('@', '_')}_{draw_tag(n, d)}.png"
                    p = sample_grid(dl, judge, figs / name, cfg.grid_masks, 3)
                    if p:
                        grids.append((m, src, n, d, Path(p).name))
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
        f"(replacing real slots, not adding steps){_phase_text(cfg)}. "
        f"Generators are trained only on their draw's N pairs "
        f"({cfg.gen_iterations or 'config default'} iterations) and write {cfg.samples_per_mask} pairs per real mask "
        f"for every mask source ({', '.join(f'`{m}`' for m in cfg.mask_sources)}): `regime` samples the N real masks "
        "repeatedly, the other sources make new masks from the N real masks only (monai_siamese.masks) and sample "
        f"each once. Selections ({', '.join(cfg.selections)}) of the non-regime sets are scored by the draw's "
        f"real-only segmenter: `filter` keeps pairs with faithfulness Dice >= {cfg.selection_dice}, `select` keeps "
        f"the {cfg.selection_fraction:.0%} of those with the highest segmenter loss. Test: the `{cfg.test_split}` split, "
        "which no generator saw. Mean Dice = mean over the foreground classes; ± = standard deviation over runs; "
        "Δ = paired difference to the real-only run of the same draw and seed, with its 95 % t-interval over the "
        "runs (draws x seeds).",
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
        "pairs of samples of the same mask (1 = identical). The last rows give the judge's own Dice on the real "
        "test slices (at its size, and fitted to the generated size as faithfulness is) and the FID/KID between the "
        "real test slab and the real pool, for scale.",
        "",
        quality_table(results, cfg),
        "",
    ]
    if results.get("selections"):
        md += ["Pair selection (kept / scored pairs, mean faithfulness under the regime segmenter):", ""]
        md += ["| set | N real | draw | selection | kept | faithfulness kept | faithfulness all |", "|" + " --- |" * 7]
        for r in results["selections"]:
            md.append(
                f"| {r['set']} | {r['regime']} | {r['draw']} | {r['mode']} | {r['kept']}/{r['total']} | "
                f"{r['mean_faithfulness_kept']:.3f} | {r['mean_faithfulness_all']:.3f} |"
            )
        md.append("")
    for m, src, n, d, name in grids:
        md += [
            f"`{m}` on `{src}` masks (N = {n}, draw {d}); each row: conditioning mask | its canvas or source image | "
            "generated samples | judge's segmentation of the first sample:",
            "",
            f"![samples {m} {src}](figures/{name})",
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
        "Per-run results: `runs/<arm>/N<N>_d<draw>_s<seed>/test/result.json`, synthetic sets: "
        "`generators/<method>/N<N>_d<draw>/sets/<mask source>/`; all numbers above, with one record per run "
        "(regime, draw, seed, arm, Dice): `results.json`.",
        "",
    ]
    report = out / "report.md"
    atomic_write_text(report, "\n".join(md))
    return str(report)
