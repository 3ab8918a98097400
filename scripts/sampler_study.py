"""Sampler settings on a trained generator of an evaluation: faithfulness, background noise and class means.

Takes one generator of a finished ``python -m monai_siamese evaluate`` folder (its trained weights, its regime's
masks, the sampling settings it was evaluated with, and the evaluation's judge segmenter), samples the same
conditioning masks once per variant and reports, per variant: the judge's Dice against the conditioning mask
(faithfulness, per class), the standard deviation of the image more than 4 pixels outside the mask (the background,
flat in real MR: speckle shows here), and the mean intensity per class next to the real images' (model units).

A variant is a dict of sampling overrides of the bundle's ``inference.json``; ``"monai_ddim": true`` swaps in
MONAI's own ``DDIMScheduler`` (which keeps the model's noise estimate when it clips the clean-image prediction) for
``monai_siamese``'s ``ClippedDDIMScheduler``, so both can be compared in one run.

Example (the committed DDIM comparison, docs/results/ddim_clipping)::

    python -m monai_siamese evaluate --preset demo --out eval_demo   # or any finished evaluation folder
    OMP_NUM_THREADS=1 python scripts/sampler_study.py --eval_dir eval_demo --method seg_guided_diffusion \\
        --regime N004_d0 --out docs/results/ddim_clipping/seg_guided_diffusion.json \\
        --variants '{"monai_ddim50": {"sampler": "ddim", "num_inference_steps": 50, "monai_ddim": true},
                     "ddim50": {"sampler": "ddim", "num_inference_steps": 50}, "dpm10": {}}'
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage


from monai_siamese.data import image_shape, load_datalist
from monai_siamese.evaluation.scoring import class_table, load_images
from monai_siamese.evaluation.steps import sample_generator
from monai_siamese.quality import faithfulness_dice, load_segmenter
from monai_siamese.utils import atomic_write_json, find_bundle_root

#: sampling overrides of the evaluation that are per folder, not per setting
_PER_RUN = ("dataset_dir", "datalist", "mask_split", "ckpt_dir", "output_dir", "samples_per_mask", "seed")
#: MONAI's DDIM on the bundle's noise schedule, for ``"monai_ddim": true``
_MONAI_DDIM = {
    "_target_": "monai.networks.schedulers.DDIMScheduler",
    "num_train_timesteps": "@num_train_timesteps",
    "schedule": "@schedule",
    "prediction_type": "@prediction",
}


def image_statistics(judge, datalist: str, split: str = "training") -> dict:
    """Images and labels of a datalist with the judge's preprocessing, the class means and the background std."""
    entries = load_datalist(datalist, split)
    d = load_images(judge.settings, entries, spatial_size=image_shape(entries[0]["image"]))
    img, lab = d["image"], d["label"]
    far = [
        img[i, 0].numpy()[ndimage.distance_transform_edt(lab[i, 0].numpy() == 0) > 4] for i in range(img.shape[0])
    ]
    means = [
        round(float(img[lab == c].mean()), 3) if bool((lab == c).any()) else None for c in range(judge.num_classes)
    ]
    return {"data": d, "class_means": means, "background_std": round(float(np.concatenate(far).std()), 4)}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--eval_dir", required=True, help="a finished evaluation folder")
    p.add_argument("--method", required=True, help="generator bundle name")
    p.add_argument("--regime", required=True, help="regime and draw folder, e.g. N004_d0")
    p.add_argument("--mask_set", default=None, help="synthetic set whose settings to start from (default: the first)")
    p.add_argument("--variants", required=True, help="JSON: name -> sampling overrides")
    p.add_argument("--out", required=True, help="JSON file of the results")
    p.add_argument("--bundles", default=None, help="bundles folder (default: the package's)")
    p.add_argument("--keep", default=None, help="keep the sampled sets in this folder (default: a temporary one)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    ev = Path(args.eval_dir)
    gen = ev / "generators" / args.method / args.regime
    draw = ev / "draws" / args.regime
    sets = sorted((gen / "sets").iterdir()) if args.mask_set is None else [gen / "sets" / args.mask_set]
    base = json.loads((sets[0] / "sample" / "result.json").read_text())["overrides"]
    keep = {k: v for k, v in base.items() if k not in _PER_RUN}
    keep["use_quality_filter"] = False  # the same pairs for every variant
    judge = load_segmenter(str(ev / "judge" / "models"), device="cpu")
    real = image_statistics(judge, str(draw / "datalist.json"))
    names = ["CSF", "GM", "WM"] if judge.num_classes == 4 else [f"class{c}" for c in range(1, judge.num_classes)]
    res: dict = {
        "eval_dir": str(ev),
        "method": args.method,
        "regime": args.regime,
        "mask_set": sets[0].name,
        "base_settings": keep,
        "real": {k: v for k, v in real.items() if k != "data"},
        "variants": {},
    }
    bundle = Path(args.bundles) / args.method if args.bundles else Path(find_bundle_root(args.method))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = args.keep or tmp
        for name, over in json.loads(args.variants).items():
            over = dict(over)
            if over.pop("monai_ddim", False):
                over["scheduler"] = dict(_MONAI_DDIM)
            t0 = time.time()
            r = sample_generator(
                bundle, ["inference.json", "demo.json"], str(gen / "models"), Path(tmp) / name, 0,
                str(draw / "datalist.json"), "training", 1, {**keep, **over},
            )
            st = image_statistics(judge, r["datalist"])
            dice = faithfulness_dice(judge, st["data"]["image"], st["data"]["label"], judge.num_classes)
            res["variants"][name] = {
                "overrides": over,
                "faithfulness": class_table(dice, names),
                "class_means": st["class_means"],
                "background_std": st["background_std"],
                "pairs": r["pairs"],
                "seconds": round(time.time() - t0, 1),
            }
            print(name, json.dumps(res["variants"][name]["faithfulness"]), "background std", st["background_std"],
                  "class means", st["class_means"], flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, res)
    return res


if __name__ == "__main__":
    main()
