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

from monai_siamese.evaluation.report import load_runs, paired_summary


def arm_runs(table: dict, arm: str, key: str = "mean") -> dict[tuple, float]:
    """``(regime, draw, seed) -> Dice[key]`` (mean Dice, or a class's) of ``arm`` in a :func:`load_runs` table."""
    return {k[1:]: dice[key] for k, dice in table.items() if k[0] == arm}


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arm", required=True, help="arm name, e.g. seg_guided_diffusion@augmented50+interpolated50")
    p.add_argument("--base", required=True, help="results.json of the reference run")
    p.add_argument("--new", required=True, help="results.json of the run with the changed setting")
    p.add_argument("--base_name", default="base")
    p.add_argument("--new_name", default="new")
    p.add_argument("--regimes", default=None, help="compare only these N, e.g. 8 or 4,8 (default: every N of --new)")
    args = p.parse_args(argv)
    new_table, base_table = load_runs(args.new), load_runs(args.base)
    new, base, real = arm_runs(new_table, args.arm), arm_runs(base_table, args.arm), arm_runs(base_table, "real")
    regimes = None if args.regimes is None else {int(n) for n in str(args.regimes).split(",") if n.strip()}
    keys = sorted(k for k in new if regimes is None or k[0] in regimes)
    missing = [k for k in keys if k not in base or k not in real]
    if not keys:
        raise SystemExit(f"{args.arm}: no runs in {args.new}" + (f" for N in {sorted(regimes)}" if regimes else ""))
    if missing:
        raise SystemExit(f"{args.arm}: runs missing in {args.base}: {missing}")
    real_new = arm_runs(new_table, "real")
    if any(k in real_new and abs(real_new[k] - real[k]) > 1e-9 for k in keys):
        raise SystemExit("the two results' real-only runs differ: not a paired comparison")
    lines = [
        f"| N, draw, seed | real only | {args.base_name} | {args.new_name} |",
        "| --- | --- | --- | --- |",
        *[f"| {k[0]}, {k[1]}, {k[2]} | {real[k]:.3f} | {base[k]:.3f} | {new[k]:.3f} |" for k in keys],
        "",
        f"gain over real only, {args.base_name}: {paired_summary([base[k] - real[k] for k in keys])}",
        f"gain over real only, {args.new_name}: {paired_summary([new[k] - real[k] for k in keys])}",
        f"{args.new_name} - {args.base_name}: {paired_summary([new[k] - base[k] for k in keys])}",
    ]
    text = "\n".join(lines)
    print(text)
    return text


if __name__ == "__main__":
    main()
