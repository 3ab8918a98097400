"""The judge's Dice on the real test slices at the generators' output size (64 x 64), computed as faithfulness is
(monai_siamese.evaluation.scoring.real_reference, which evaluations since 2026-12-07 run themselves), for the
committed run, whose real_vs_real step predates it.

    python docs/results/eval_demo_fresh/judge_at_size.py /work/runs/eval_full_fresh
"""

import json
import sys
from pathlib import Path

from monai_siamese.data import load_datalist
from monai_siamese.evaluation.scoring import real_reference
from monai_siamese.quality import load_segmenter

run = Path(sys.argv[1])
cfg = json.loads((run / "config.json").read_text())["config"]
judge = load_segmenter(run / "judge" / "models" / "model_final.pt")
test, pool = load_datalist(cfg["datalist"], cfg["test_split"]), load_datalist(cfg["datalist"], cfg["pool_split"])
out = {"command": "python " + " ".join(sys.argv), "judge": str(run / "judge" / "models" / "model_final.pt")}
for size in ([64, 64], [128, 128]):
    ref = real_reference(judge, test, pool, size, cfg["class_names"], cfg["kid_subsets"])
    out["x".join(map(str, size))] = {k: ref[k] for k in ("test_dice_at_size", "fid", "kid", "image_size")}
    print(size, {k: round(v, 3) for k, v in ref["test_dice_at_size"].items()})
(Path(__file__).parent / "judge_at_size.json").write_text(json.dumps(out, indent=1) + "\n")
