"""Mask sources on coronal slices: the preset's mixture (half augmented, half interpolated) against `augmented` alone
for the segmentation-guided generators, paired per (N, draw, seed) with the real-only run of the same slices and seed.
Prints a Markdown table; 95 % t-interval over draws x seeds, runs better.

    python docs/results/coronal_confirmation/compare.py docs/results/coronal_confirmation/results.json
"""

import sys

from monai_siamese.evaluation.report import load_runs, paired_summary

runs = load_runs(sys.argv[1])
method = "seg_guided_diffusion"
arms = {"mixture (augmented:0.5,interpolated:0.5)": "augmented50+interpolated50", "augmented": "augmented"}
print("| N | arm | Δ mean Dice vs real only [95 % CI], runs better | Δ CSF Dice vs real only |\n| --- | --- | --- | --- |")
rows = []
for n in sorted({k[1] for k in runs if k[0] == "real"}):
    keys = sorted(k[1:] for k in runs if k[0] == "real" and k[1] == n)
    real = sum(runs[("real",) + k]["mean"] for k in keys) / len(keys)
    print(f"| {n} | real only | mean Dice {real:.3f} | |")
    for name, tag in arms.items():
        arm = f"{method}@{tag}"
        d = paired_summary([runs[(arm,) + k]["mean"] - runs[("real",) + k]["mean"] for k in keys])
        c = paired_summary([runs[(arm,) + k]["CSF"] - runs[("real",) + k]["CSF"] for k in keys])
        print(f"| {n} | {name} | {d} | {c} |")
    aug, mix = f"{method}@augmented", f"{method}@augmented50+interpolated50"
    rows.append((n, paired_summary([runs[(aug,) + k]["mean"] - runs[(mix,) + k]["mean"] for k in keys])))
print("\n| N | augmented - mixture, paired mean Dice [95 % CI], runs better |\n| --- | --- |")
for n, s in rows:
    print(f"| {n} | {s} |")
