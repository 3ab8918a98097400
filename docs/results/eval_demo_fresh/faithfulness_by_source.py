"""Faithfulness of the committed run's new-mask sets split by the source of each mask (augmented / interpolated),
pooled over both draws: the judge's Dice of each 64 x 64 generated image against its mask, as the evaluation scores
faithfulness (whose report gives the mixture's mean per draw only).

    python docs/results/eval_demo_fresh/faithfulness_by_source.py /work/runs/eval_full_fresh
"""

import collections
import glob
import json
import sys
from pathlib import Path

import torch

from monai_siamese.data import load_datalist
from monai_siamese.evaluation.scoring import class_table, load_images
from monai_siamese.quality import faithfulness_dice, load_segmenter

run = Path(sys.argv[1])
names = json.loads((run / "config.json").read_text())["config"]["class_names"]
judge = load_segmenter(run / "judge" / "models" / "model_final.pt")
rows = collections.defaultdict(list)
pattern = run / "generators" / "*" / "N*_d*" / "sets" / "augmented50+interpolated50" / "synthetic" / "datalist.json"
for dl in sorted(glob.glob(str(pattern))):
    parts = Path(dl).relative_to(run).parts  # generators / method / N004_d0 / sets / ...
    entries = load_datalist(dl, "training")
    # each conditioning mask's source, as the mask source recorded it (masks/datalist.json beside the pairs)
    masks = load_datalist(Path(dl).parent / "masks" / "datalist.json", "training")
    kinds = {m["label"]: m["mask_source"] for m in masks}
    data = load_images(judge.settings, entries, spatial_size=(64, 64))
    dice = faithfulness_dice(judge, data["image"], data["label"], judge.num_classes)
    for e, row in zip(entries, dice):
        rows[f"{parts[1]} N={int(parts[2][1:4])} {kinds[e['source_mask']]}"].append(row)
out = {"command": "python " + " ".join(sys.argv)}
for key, v in sorted(rows.items()):
    out[key] = {"pairs": len(v), **class_table(torch.stack(v), names)}
    print(key, {k: round(x, 3) for k, x in out[key].items()})
(Path(__file__).parent / "faithfulness_by_source.json").write_text(json.dumps(out, indent=1) + "\n")
