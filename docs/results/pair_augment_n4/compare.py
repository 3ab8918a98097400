"""Generator pair augmentation (pair_augment_prob 0.5) against the committed whole-preset run eval_demo_fresh (same
draws, judge, real-only runs, seeds and settings; the generators there trained without it): seg-guided at N = 4 on
new masks, run by run. python docs/results/pair_augment_n4/compare.py"""

import json
from pathlib import Path

from monai_siamese.evaluation.report import ci95

HERE = Path(__file__).parent
ARM = "seg_guided_diffusion@augmented50+interpolated50"


def runs(path, arm):
    rows = json.loads(path.read_text())["runs"]
    return {(r["regime"], r["draw"], r["seed"]): r["dice"]["mean"] for r in rows if r["arm"] == arm}


def interval(d):
    m, low, high, n = ci95(d)
    return f"{m:+.3f} [{low:+.3f}, {high:+.3f}] {sum(x > 0 for x in d)}/{n}"


aug = runs(HERE / "results.json", ARM)
base = runs(HERE.parent / "eval_demo_fresh" / "results.json", ARM)
real = runs(HERE.parent / "eval_demo_fresh" / "results.json", "real")
assert runs(HERE / "results.json", "real") == {k: real[k] for k in aug}  # the same real-only runs
keys = sorted(aug)
print("| N, draw, seed | real only | without pair augmentation | with (p = 0.5) |")
print("| --- | --- | --- | --- |")
for k in keys:
    print(f"| {k[0]}, {k[1]}, {k[2]} | {real[k]:.3f} | {base[k]:.3f} | {aug[k]:.3f} |")
print()
print(f"gain over real only, without: {interval([base[k] - real[k] for k in keys])}")
print(f"gain over real only, with:    {interval([aug[k] - real[k] for k in keys])}")
print(f"with - without:               {interval([aug[k] - base[k] for k in keys])}")
