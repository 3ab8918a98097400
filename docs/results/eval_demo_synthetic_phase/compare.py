"""Paired difference, synthetic phase minus fixed ratio, per method and regime (same draws, seeds, sets and
real-only runs): python docs/results/eval_demo_synthetic_phase/compare.py"""

import json
from pathlib import Path

from monai_siamese.evaluation.report import ci95

HERE = Path(__file__).parent


def runs(path):
    return {(r["arm"], r["regime"], r["draw"], r["seed"]): r["dice"] for r in json.loads(path.read_text())["runs"]}


phase, fixed = runs(HERE / "results.json"), runs(HERE.parent / "eval_demo_committed" / "results.json")
for arm in sorted({k[0] for k in phase if k[0] != "real"}):
    for n in sorted({k[1] for k in phase}):
        keys = sorted(k for k in phase if k[0] == arm and k[1] == n and k in fixed)
        for cls in ("mean", "CSF"):
            d = [phase[k][cls] - fixed[k][cls] for k in keys]
            m, low, high, count = ci95(d)
            better = sum(x > 0 for x in d)
            print(f"{arm:45s} N={n} {cls:4s} phase - fixed {m:+.3f} [{low:+.3f}, {high:+.3f}] {better}/{count}")
