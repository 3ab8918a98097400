"""Run-by-run comparison of one arm between two evaluation results (same draws, seeds and real-only runs): a
changed setting against a committed run. Prints a Markdown table of mean Dice per (N, draw, seed), both arms' paired
gain over real only and their difference, each with its 95 % t-interval and the count of runs better.

Example (docs/results/pair_augment_n4/compare.md)::

    python scripts/compare_runs.py --arm "seg_guided_diffusion@augmented50+interpolated50" \\
        --base docs/results/eval_demo_fresh/results.json --new docs/results/pair_augment_n4/results.json \\
        --base_name "without pair augmentation" --new_name "with (p = 0.5)"
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from monai_siamese.evaluation.report import ci95


def runs(path: str | Path, arm: str) -> dict[tuple, float]:
    """``(regime, draw, seed) -> mean Dice`` of ``arm`` in an evaluation's ``results.json``."""
    rows = json.loads(Path(path).read_text())["runs"]
    return {(r["regime"], r["draw"], r["seed"]): r["dice"]["mean"] for r in rows if r["arm"] == arm}


def interval(diffs: list[float]) -> str:
    m, low, high, n = ci95(diffs)
    return f"{m:+.3f} [{low:+.3f}, {high:+.3f}] {sum(x > 0 for x in diffs)}/{n}"


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arm", required=True, help="arm name, e.g. seg_guided_diffusion@augmented50+interpolated50")
    p.add_argument("--base", required=True, help="results.json of the reference run")
    p.add_argument("--new", required=True, help="results.json of the run with the changed setting")
    p.add_argument("--base_name", default="base")
    p.add_argument("--new_name", default="new")
    args = p.parse_args(argv)
    new, base = runs(args.new, args.arm), runs(args.base, args.arm)
    real = runs(args.base, "real")
    keys = sorted(new)
    missing = [k for k in keys if k not in base or k not in real]
    if not keys:
        raise SystemExit(f"{args.arm}: no runs in {args.new}")
    if missing:
        raise SystemExit(f"{args.arm}: runs missing in {args.base}: {missing}")
    real_new = runs(args.new, "real")
    if any(k in real_new and abs(real_new[k] - real[k]) > 1e-9 for k in keys):
        raise SystemExit("the two results' real-only runs differ: not a paired comparison")
    lines = [
        f"| N, draw, seed | real only | {args.base_name} | {args.new_name} |",
        "| --- | --- | --- | --- |",
        *[f"| {k[0]}, {k[1]}, {k[2]} | {real[k]:.3f} | {base[k]:.3f} | {new[k]:.3f} |" for k in keys],
        "",
        f"gain over real only, {args.base_name}: {interval([base[k] - real[k] for k in keys])}",
        f"gain over real only, {args.new_name}: {interval([new[k] - real[k] for k in keys])}",
        f"{args.new_name} - {args.base_name}: {interval([new[k] - base[k] for k in keys])}",
    ]
    text = "\n".join(lines)
    print(text)
    return text


if __name__ == "__main__":
    main()
