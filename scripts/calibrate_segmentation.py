"""Calibrate the demo evaluation's segmentation arm (issue 14): which segmentation setting reaches the real-only
targets (mean Dice >= 0.70 at N = 4, >= 0.78 at N = 8, judge >= 0.85) for the least CPU?

Every run goes through the evaluation's own steps: :func:`~monai_siamese.evaluation.steps.draw_regime` (the same
slice draws the evaluation makes), :func:`~monai_siamese.evaluation.steps.train_segmentation` (the segmentation
bundle, ``train.json`` + ``demo.json`` + overrides) and :func:`~monai_siamese.evaluation.steps.score_segmentation`.
Settings are chosen on the demo ``validation`` split (every 12th slice of the pool, outside the ``training`` split
that regimes are drawn from and the judge trains on); the ``test`` slab is only reported as the outcome.

Each run records:

- Dice per class on ``validation`` and ``test`` as the evaluation scores it (at the segmenter's input size, labels
  resized nearest) and at the data's native 128 x 128 (prediction logits resized back, bilinear), so that settings
  at different sizes compare on the same labels;
- process CPU seconds (``time.process_time``, all threads of this process) and wall seconds of the training, and
  the 1-minute load average before and after (the machine is shared).

A setting is named ``s<size>_r<res units>_i<iterations>`` with optional ``_b<batch>``, ``_c<c1-c2-...>`` (UNet
channels; strides 2 between levels) and ``_lr<lr>``, e.g. ``s96_r0_i600`` or ``s128_r2_i600_c16-32-64-128``.
Runs are cached (``result.json`` per run): a rerun skips finished runs and only re-aggregates.

Example::

    MONAI_SIAMESE_DEMO_DIR=/tmp/segcal/demo OMP_NUM_THREADS=1 python scripts/calibrate_segmentation.py \\
        --out /tmp/segcal/runs --settings s64_r0_i600 s96_r0_i600 --regimes 4 8 --draws 0 1 --seeds 0 1 --judge
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from monai_siamese.evaluation.scoring import load_images, score_segmentation
from monai_siamese.evaluation.steps import draw_regime, train_segmentation
from monai_siamese.utils import atomic_write_json

CLASS_NAMES = ["CSF", "GM", "WM"]
NUM_CLASSES = 4
NATIVE = (128, 128)
_NAME = re.compile(
    r"^s(?P<size>\d+)_r(?P<res>\d+)_i(?P<iters>\d+)(?:_b(?P<batch>\d+))?(?:_c(?P<ch>[\d-]+))?(?:_lr(?P<lr>[\d.e-]+))?$"
)


def parse_setting(name: str) -> dict[str, Any]:
    """``s96_r0_i600[_b8][_c16-32-64-128][_lr0.001]`` -> the arguments of ``train_segmentation``."""
    m = _NAME.match(name)
    if not m:
        raise ValueError(f"bad setting name {name!r} (expected s<size>_r<res>_i<iters>[_b<batch>][_c<ch>][_lr<lr>])")
    over: dict[str, Any] = {"num_classes": NUM_CLASSES, "network_def#num_res_units": int(m["res"])}
    if m["ch"]:
        ch = [int(c) for c in m["ch"].split("-")]
        over["network_def#channels"] = ch
        over["network_def#strides"] = [2] * (len(ch) - 1)
    if m["lr"]:
        over["lr"] = float(m["lr"])
    return {
        "spatial_size": int(m["size"]),
        "iterations": int(m["iters"]),
        "batch_size": int(m["batch"] or 8),
        "overrides": over,
    }


def _table(scores: torch.Tensor) -> dict[str, float]:
    per = [float(v) for v in torch.nanmean(scores.float(), dim=0)]
    out = {n: per[i] for i, n in enumerate(CLASS_NAMES)}
    out["mean"] = float(np.nanmean(per))
    return out


def native_dice(model: Path, entries: list[dict]) -> dict[str, float]:
    """Dice per class at the data's native size: inputs fitted to 128 x 128, the segmenter resizes them to its size
    and its logits back (bilinear), labels stay native."""
    from monai_siamese.quality import load_segmenter, per_class_scores

    seg = load_segmenter(model, device="cpu")
    data = load_images(seg.settings, entries, spatial_size=NATIVE)
    pred = seg.predict(data["image"])
    return _table(per_class_scores(pred, data["label"], NUM_CLASSES)["dice"])


def run_one(
    bundle: Path, datalist: str, train_split: str, folder: Path, seed: int, setting: dict, val: list, test: list
) -> dict:
    result_path = folder / "result.json"
    if result_path.is_file():
        return json.loads(result_path.read_text())
    if (folder / "models").exists():  # an interrupted run: start it again from scratch (no resume in timings)
        import shutil

        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    load0 = os.getloadavg()[0]
    c0, w0 = time.process_time(), time.time()
    train_segmentation(
        bundle,
        ["train.json", "demo.json"],
        datalist,
        folder,
        seed,
        iterations=setting["iterations"],
        batch_size=setting["batch_size"],
        spatial_size=setting["spatial_size"],
        overrides={**setting["overrides"], "train_split": train_split},
        val_split="validation",
    )
    cpu, wall = time.process_time() - c0, time.time() - w0
    load1 = os.getloadavg()[0]
    model = folder / "models" / "model_final.pt"
    c1 = time.process_time()
    result = {
        "train_cpu_s": round(cpu, 1),
        "train_wall_s": round(wall, 1),
        "load1_before_after": [round(load0, 2), round(load1, 2)],
        "val": score_segmentation(model, val, CLASS_NAMES, "cpu")["dice"],
        "test": score_segmentation(model, test, CLASS_NAMES, "cpu")["dice"],
        "val_native": native_dice(model, val),
        "test_native": native_dice(model, test),
    }
    result["score_cpu_s"] = round(time.process_time() - c1, 1)
    atomic_write_json(result_path, result)
    return result


def _stats(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=float)
    return {"mean": float(a.mean()), "sd": float(a.std(ddof=1)) if len(a) > 1 else 0.0, "n": int(len(a))}


def aggregate(runs: dict[str, dict[str, dict]]) -> dict:
    """Mean ± sd over runs per setting and group (``N4``, ``N8``, ``judge``)."""
    out: dict[str, dict] = {}
    for setting, by_tag in sorted(runs.items()):
        groups: dict[str, list[dict]] = {}
        for tag, r in by_tag.items():
            groups.setdefault(tag.split("_")[0], []).append(r)
        out[setting] = {}
        for group, rs in sorted(groups.items()):
            row: dict[str, Any] = {"runs": len(rs)}
            for split in ("val", "test", "val_native", "test_native"):
                row[split] = {k: _stats([r[split][k] for r in rs]) for k in [*CLASS_NAMES, "mean"]}
            row["train_cpu_s"] = _stats([r["train_cpu_s"] for r in rs])
            row["train_wall_s"] = _stats([r["train_wall_s"] for r in rs])
            out[setting][group] = row
    return out


def markdown_table(summary: dict, native: bool = True) -> str:
    """Settings x groups: validation and test mean Dice ± sd, CSF Dice, CPU and wall seconds per training run."""
    v, t = ("val_native", "test_native") if native else ("val", "test")
    head = (
        "| setting | group | runs | val mean Dice | val CSF | test mean Dice | test CSF | test GM | test WM "
        "| CPU s / run | wall s / run |"
    )
    lines = [head, "| " + " | ".join(["---"] * 11) + " |"]
    fmt = lambda s: f"{s['mean']:.3f} ± {s['sd']:.3f}" if s["n"] > 1 else f"{s['mean']:.3f}"  # noqa: E731
    for setting, groups in summary.items():
        for group in sorted(groups, key=lambda g: (g == "judge", g)):
            row = groups[group]
            lines.append(
                f"| {setting} | {group} | {row['runs']} | {fmt(row[v]['mean'])} | {fmt(row[v]['CSF'])} "
                f"| {fmt(row[t]['mean'])} | {fmt(row[t]['CSF'])} | {fmt(row[t]['GM'])} | {fmt(row[t]['WM'])} "
                f"| {row['train_cpu_s']['mean']:.0f} | {row['train_wall_s']['mean']:.0f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    from monai_siamese.data import demo_datalist, load_datalist

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--settings", nargs="+", default=[])
    p.add_argument("--regimes", nargs="*", type=int, default=[4, 8])
    p.add_argument("--draws", nargs="+", type=int, default=[0, 1])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--judge", action="store_true", help="also train the judge (whole pool, seed = first seed)")
    p.add_argument("--aggregate_only", action="store_true", help="only rebuild results.json and table.md")
    p.add_argument("--bundles_dir", default=str(Path(__file__).resolve().parents[1] / "bundles"))
    args = p.parse_args(argv)

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    out = Path(args.out)
    bundle = Path(args.bundles_dir) / "segmentation"
    datalist = demo_datalist()
    pool = load_datalist(datalist, "training")
    val = load_datalist(datalist, "validation")
    test = load_datalist(datalist, "test")
    draws: dict[tuple[int, int], str] = {}
    for n in [] if args.aggregate_only else args.regimes:
        for d in args.draws:
            folder = out / "draws" / f"N{n:03d}_d{d}"
            if not (folder / "datalist.json").is_file():
                draw_regime(pool, n, d, folder, NUM_CLASSES)
            draws[(n, d)] = str(folder / "datalist.json")
            picked = json.loads((folder / "datalist.json").read_text())["training"]
            print(f"draw N={n} d={d}: {[Path(e['image']).name for e in picked]}", flush=True)
    for name in [] if args.aggregate_only else args.settings:
        setting = parse_setting(name)
        jobs = []
        if args.judge:
            jobs.append(("judge_s%d" % args.seeds[0], datalist, "training", args.seeds[0]))
        for n in args.regimes:
            for d in args.draws:
                for s in args.seeds:
                    jobs.append((f"N{n}_d{d}_s{s}", draws[(n, d)], "training", s))
        for tag, dl, split, seed in jobs:
            print(f"[{time.strftime('%H:%M:%S')}] {name} {tag} (load {os.getloadavg()[0]:.2f})", flush=True)
            r = run_one(bundle, dl, split, out / "runs" / name / tag, seed, setting, val, test)
            print(
                f"    train {r['train_cpu_s']:.0f} CPU s / {r['train_wall_s']:.0f} wall s; mean Dice val "
                f"{r['val']['mean']:.3f} (native {r['val_native']['mean']:.3f}), test {r['test']['mean']:.3f} "
                f"(native {r['test_native']['mean']:.3f}, CSF {r['test_native']['CSF']:.3f})",
                flush=True,
            )
    # aggregate every finished run under out/runs (also those of earlier invocations)
    runs: dict[str, dict[str, dict]] = {}
    for f in sorted((out / "runs").glob("*/*/result.json")):
        runs.setdefault(f.parent.parent.name, {})[f.parent.name] = json.loads(f.read_text())
    draw_slices = {
        f.parent.name: [Path(e["image"]).name for e in json.loads(f.read_text())["training"]]
        for f in sorted((out / "draws").glob("*/datalist.json"))
    }
    summary = {
        "summary": aggregate(runs),
        "draws": draw_slices,
        "validation": [Path(e["image"]).name for e in val],
        "test": [Path(e["image"]).name for e in test],
        "torch_threads": torch.get_num_threads(),
        "runs": runs,
    }
    atomic_write_json(out / "results.json", summary)
    (out / "table.md").write_text(
        "Dice at the native 128 x 128:\n\n"
        + markdown_table(summary["summary"])
        + "\nDice as the evaluation scores it (at the segmenter's input size):\n\n"
        + markdown_table(summary["summary"], native=False)
    )
    print(f"results: {out / 'results.json'}, {out / 'table.md'}")


if __name__ == "__main__":
    main()
