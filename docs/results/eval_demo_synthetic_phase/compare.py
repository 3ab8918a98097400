"""Paired difference, synthetic phase minus fixed ratio, per method and regime (same draws, seeds, sets and
real-only runs): python docs/results/eval_demo_synthetic_phase/compare.py"""

from pathlib import Path

from monai_siamese.evaluation.report import load_runs, paired_summary

HERE = Path(__file__).parent

phase, fixed = load_runs(HERE / "results.json"), load_runs(HERE.parent / "eval_demo_committed" / "results.json")
for arm in sorted({k[0] for k in phase if k[0] != "real"}):
    for n in sorted({k[1] for k in phase}):
        keys = sorted(k for k in phase if k[0] == arm and k[1] == n and k in fixed)
        for cls in ("mean", "CSF"):
            d = [phase[k][cls] - fixed[k][cls] for k in keys]
            print(f"{arm:45s} N={n} {cls:4s} phase - fixed {paired_summary(d)}")
