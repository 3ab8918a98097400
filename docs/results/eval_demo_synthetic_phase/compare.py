"""Paired difference, synthetic phase minus fixed ratio, per method and regime (same draws, seeds, sets and
real-only runs): python docs/results/eval_demo_synthetic_phase/compare.py"""

import json
import math
import statistics
from pathlib import Path

HERE = Path(__file__).parent
T975 = {2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571}  # t quantiles for 3-6 runs


def runs(path):
    return {(r["arm"], r["regime"], r["draw"], r["seed"]): r["dice"] for r in json.loads(path.read_text())["runs"]}


phase, fixed = runs(HERE / "results.json"), runs(HERE.parent / "eval_demo_committed" / "results.json")
for arm in sorted({k[0] for k in phase if k[0] != "real"}):
    for n in sorted({k[1] for k in phase}):
        keys = sorted(k for k in phase if k[0] == arm and k[1] == n and k in fixed)
        for cls in ("mean", "CSF"):
            d = [phase[k][cls] - fixed[k][cls] for k in keys]
            m, h = statistics.mean(d), T975[len(d) - 1] * statistics.stdev(d) / math.sqrt(len(d))
            better = sum(x > 0 for x in d)
            print(f"{arm:45s} N={n} {cls:4s} phase - fixed {m:+.3f} [{m - h:+.3f}, {m + h:+.3f}] {better}/{len(d)}")
