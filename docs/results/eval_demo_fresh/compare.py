"""The fresh whole-preset run against the committed one (same draws, seeds and settings; the fresh run's training
used fused AdamW, so its runs differ from the committed ones only by float rounding that grows over training):
per arm and regime, the run-by-run difference in mean Dice (fresh - committed) and both runs' paired gain over
real only. python docs/results/eval_demo_fresh/compare.py"""

import statistics
from pathlib import Path

from monai_siamese.evaluation.report import load_runs, paired_summary

HERE = Path(__file__).parent


def runs(path):
    return {k: dice["mean"] for k, dice in load_runs(path).items()}


fresh = runs(HERE / "results.json")
# the committed preset's new-mask arms and its N = 4 regime arms (N = 8 regime arms were not run with it)
old = {**runs(HERE.parent / "eval_demo_committed" / "results.json"),
       **runs(HERE.parent / "eval_demo_committed_n4_sources" / "results.json")}  # fmt: skip
print("| arm | N | fresh - committed, per run: mean abs (max abs) | gain over real, fresh "
      "| gain over real, committed |")  # fmt: skip
print("| --- | --- | --- | --- | --- |")
for arm in sorted({k[0] for k in fresh}, key=lambda a: (a != "real", a)):
    for n in sorted({k[1] for k in fresh}):
        keys = sorted(k for k in fresh if k[0] == arm and k[1] == n)
        both = [k for k in keys if k in old]
        diff = [fresh[k] - old[k] for k in both]
        rep = f"{statistics.mean(map(abs, diff)):.3f} ({max(map(abs, diff)):.3f}), {len(diff)} runs" if diff else "-"
        gain = ["-", "-"]
        if arm != "real":
            for i, src in enumerate((fresh, old)):
                d = [src[k] - src[("real",) + k[1:]] for k in keys if k in src and ("real",) + k[1:] in src]
                gain[i] = paired_summary(d) if len(d) >= 3 else "-"
        print(f"| {arm} | {n} | {rep} | {gain[0]} | {gain[1]} |")
