"""Usefulness of each new-mask source on its own, per method: the committed demo preset run's `regime` and mixture
arms (docs/results/eval_demo_fresh) against the single-source arms sampled here from the same trained generators
(same draws, judge, real-only runs and seeds). Paired differences over draws x seeds, 95 % t-interval, runs better.

    python docs/results/mask_source_usefulness/compare.py > docs/results/mask_source_usefulness/compare.md
"""

from pathlib import Path

from monai_siamese.evaluation.report import load_runs, paired_summary

HERE = Path(__file__).parent
BASE = load_runs(HERE.parent / "eval_demo_fresh" / "results.json")
NEW = {}
for sub in ("seg_guided", "others"):
    if (HERE / sub / "results.json").is_file():
        NEW.update(load_runs(HERE / sub / "results.json"))
SOURCES = [
    ("regime", "regime"),
    ("interpolated", "interpolated"),
    ("augmented:0.5,interpolated:0.5 (preset)", "augmented50+interpolated50"),
    ("augmented", "augmented"),
]


def deltas(table, arm, ref, keys, cls="mean"):
    """``arm`` (in ``table``) minus ``ref`` (in the committed run) per run, for class ``cls``."""
    return [table[(arm,) + k][cls] - BASE[(ref,) + k][cls] for k in keys]


print("| method | N | mask source | Δ mean Dice vs real only [95 % CI], runs better | Δ CSF Dice vs real only | "
      "- mixture, paired |\n| --- | --- | --- | --- | --- | --- |")  # fmt: skip
for method in ("seg_guided_diffusion", "siamese_diffusion", "meddiff_ft"):
    mix = f"{method}@augmented50+interpolated50"
    for n in (4, 8):
        keys = sorted(k[1:] for k in BASE if k[0] == "real" and k[1] == n)
        for name, tag in SOURCES:
            arm = f"{method}@{tag}"
            table = BASE if (arm,) + keys[0] in BASE else NEW
            if (arm,) + keys[0] not in table:
                continue
            d = paired_summary(deltas(table, arm, "real", keys))
            c = paired_summary(deltas(table, arm, "real", keys, "CSF"))
            m = "" if arm == mix else paired_summary(deltas(table, arm, mix, keys))
            print(f"| {method} | {n} | {name} | {d} | {c} | {m} |")
