"""Mask sources on coronal slices: the preset's mixture (half augmented, half interpolated) against `augmented` alone
for the segmentation-guided generators, paired per (N, draw, seed) with the real-only run of the same slices and seed.
Prints a Markdown table; 95 % t-interval over draws x seeds, runs better.

    python docs/results/coronal_confirmation/compare.py docs/results/coronal_confirmation/results.json
"""

import sys

from monai_siamese.evaluation.report import load_runs, paired_summary

runs = load_runs(sys.argv[1])
method = "seg_guided_diffusion"
mix, aug = f"{method}@augmented50+interpolated50", f"{method}@augmented"
arms = {"mixture (augmented:0.5,interpolated:0.5)": mix, "augmented": aug}


def deltas(arm, ref, keys, cls="mean"):
    """``arm`` minus ``ref`` per run, for class ``cls``."""
    return paired_summary([runs[(arm,) + k][cls] - runs[(ref,) + k][cls] for k in keys])


print("| N | arm | Δ mean Dice vs real only [95 % CI], runs better | Δ CSF Dice vs real only |")
print("| --- | --- | --- | --- |")
rows = []
for n in sorted({k[1] for k in runs if k[0] == "real"}):
    keys = sorted(k[1:] for k in runs if k[0] == "real" and k[1] == n)
    real = sum(runs[("real",) + k]["mean"] for k in keys) / len(keys)
    print(f"| {n} | real only | mean Dice {real:.3f} | |")
    for name, arm in arms.items():
        print(f"| {n} | {name} | {deltas(arm, 'real', keys)} | {deltas(arm, 'real', keys, 'CSF')} |")
    rows.append((n, deltas(aug, mix, keys)))
print("\n| N | augmented - mixture, paired mean Dice [95 % CI], runs better |\n| --- | --- |")
for n, s in rows:
    print(f"| {n} | {s} |")
