"""Class-mean intensities and the within-WM standard deviation (texture noise) of the first 60 pairs of draw 0 at
N = 8, for the real draw and each synthetic set of run.sh (images as written, labels as written).

    python docs/results/meddiff_erosion/intensity.py
"""

import json
import os

import nibabel as nib
import numpy as np

RUNS = "/work/runs/sp"
SETS = {
    "real slices of the draw": "md_ero_dropout_8/draws/N008_d0/datalist.json",
    "seg-guided DDPM-v, guidance 2": "md_ero_dropout_8/generators/seg_guided_diffusion/N008_d0/sets/augmented/synthetic",
    "MedDiff-FT before (pairs_per_mask)": "ppm_all8/generators/meddiff_ft/N008_d0/sets/augmented/synthetic",
    "MedDiff-FT, dropout, guidance 2": "md_ero_dropout_8/generators/meddiff_ft/N008_d0/sets/augmented/synthetic",
    "MedDiff-FT, dropout, guidance 1": "md_ero_dropout_g1_8/generators/meddiff_ft/N008_d0/sets/augmented/synthetic",
}


def stats(datalist: str, n: int = 60) -> tuple[dict[str, float], float]:
    base = os.path.dirname(datalist)
    means: dict[int, list[float]] = {1: [], 2: [], 3: []}
    noise = []
    for e in json.load(open(datalist))["training"][:n]:
        im = np.asarray(nib.load(os.path.join(base, e["image"])).dataobj, dtype=float).squeeze()
        lab = np.asarray(nib.load(os.path.join(base, e["label"])).dataobj).squeeze()
        for c in means:
            if (lab == c).sum() > 20:
                means[c].append(im[lab == c].mean())
        if (lab == 3).sum() > 50:
            noise.append(im[lab == 3].std())
    names = {1: "CSF", 2: "GM", 3: "WM"}
    return {names[c]: round(float(np.mean(v)), 3) for c, v in means.items()}, round(float(np.mean(noise)), 3)


if __name__ == "__main__":
    print("| set | CSF | GM | WM | GM - WM | WM sd |\n| --- | --- | --- | --- | --- | --- |")
    for name, path in SETS.items():
        path = os.path.join(RUNS, path)
        m, sd = stats(path if path.endswith(".json") else os.path.join(path, "datalist.json"))
        print(f"| {name} | {m['CSF']} | {m['GM']} | {m['WM']} | {m['GM'] - m['WM']:+.3f} | {sd} |")
