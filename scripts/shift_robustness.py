"""Dice of trained segmenters on real test slices under simulated acquisition shifts (another scanner's contrast,
bias field, resolution and noise), to compare training settings on data unlike the training data.

    python scripts/shift_robustness.py --group "no photometric=evalA/runs/real/*/models/model_final.pt" \
        --group "photometric=evalB/runs/real/*/models/model_final.pt" --out docs/results/shift_robustness

Each ``--group NAME=GLOB`` names trained weights (with the ``segmenter.json`` the evaluation writes beside them);
models whose run folder (``N004_d0_s1``) appears in every group are compared paired. Test slices: the demo data's
``test`` split unless ``--datalist`` is given. Writes ``shift_robustness.json`` and ``.md``.

The shifts act on images in the models' [-1, 1] range, with fixed seeds: ``gamma`` 0.5 and 2.0 (outside the
augmentation's 0.7-1.5), a smooth multiplicative ``bias`` field (degree-3 polynomial, coefficients 0.05-0.15, one
field per slice), ``lowres`` (every second pixel, then bilinear back: half the resolution), ``noise`` (Gaussian,
sd 0.1 of the range: twice the augmentation's largest).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F


def _gamma(x: torch.Tensor, g: float) -> torch.Tensor:
    return ((x + 1) / 2).clamp(0, 1) ** g * 2 - 1


def _bias(x: torch.Tensor, seed: int) -> torch.Tensor:
    from monai.transforms import RandBiasField

    out = []
    for i, img in enumerate(x):
        t = RandBiasField(degree=3, coeff_range=(0.05, 0.15), prob=1.0)
        t.set_random_state(seed + i)
        out.append(torch.as_tensor(t((img + 1) / 2)) * 2 - 1)
    return torch.stack(out).float()


def _lowres(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x[..., ::2, ::2], size=x.shape[-2:], mode="bilinear", align_corners=False)


def _noise(x: torch.Tensor, seed: int) -> torch.Tensor:
    return x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))


SHIFTS = {
    "none": lambda x: x,
    "gamma 0.5": lambda x: _gamma(x, 0.5),
    "gamma 2.0": lambda x: _gamma(x, 2.0),
    "bias": lambda x: _bias(x, 0),
    "lowres": _lowres,
    "noise": lambda x: _noise(x, 0),
}


def score(model: str, entries: list[dict], datalist: str) -> dict[str, dict[str, float]]:
    """Dice per foreground class and their mean of ``model`` on ``entries`` for every shift."""
    from monai_siamese.evaluation.protocol import class_names_from_datalist
    from monai_siamese.evaluation.scoring import class_table, load_images
    from monai_siamese.quality import load_segmenter, per_class_scores

    seg = load_segmenter(model, device="cpu")
    names = class_names_from_datalist(datalist, seg.num_classes)
    data = load_images(seg.settings, entries)
    out = {}
    for name, shift in SHIFTS.items():
        pred = seg.predict(shift(data["image"]))
        out[name] = class_table(per_class_scores(pred, data["label"], seg.num_classes)["dice"], names)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--group", action="append", required=True, help="NAME=GLOB of model weights")
    p.add_argument("--datalist", default=None, help="datalist with the test split (default: the demo data)")
    p.add_argument("--split", default="test")
    p.add_argument("--out", required=True)
    a = p.parse_args()

    from monai_siamese.data import demo_datalist, load_datalist
    from monai_siamese.evaluation.report import mean_std

    datalist = a.datalist or demo_datalist()
    entries = load_datalist(datalist, a.split)
    groups = {}
    for spec in a.group:
        name, pattern = spec.split("=", 1)
        groups[name] = {Path(m).parent.parent.name: m for m in sorted(glob.glob(pattern))}
        if not groups[name]:
            raise SystemExit(f"--group {name}: no weights match {pattern}")
    results = {
        g: {run: score(m, entries, datalist) for run, m in ms.items()}
        for g, ms in groups.items()
    }
    common = sorted(set.intersection(*(set(r) for r in results.values())))
    lines = [
        f"Mean foreground Dice on `{a.split}` of {datalist} under simulated shifts"
        f" ({len(common)} paired runs per group)",
        "",
        "| group | " + " | ".join(SHIFTS) + " |",
        "| --- | " + " | ".join("---" for _ in SHIFTS) + " |",
    ]
    for g, res in results.items():
        cells = []
        for s in SHIFTS:
            m, sd, _ = mean_std([res[r][s]["mean"] for r in common])
            cells.append(f"{m:.3f} ± {sd:.3f}")
        lines.append(f"| {g} | " + " | ".join(cells) + " |")
    first = next(iter(results))
    for g, res in list(results.items())[1:]:
        cells = []
        for s in SHIFTS:
            d = [res[r][s]["mean"] - results[first][r][s]["mean"] for r in common]
            cells.append(f"{mean_std(d)[0]:+.3f} ({sum(x > 0 for x in d)}/{len(d)} better)")
        lines.append(f"| {g} - {first}, paired | " + " | ".join(cells) + " |")
    os.makedirs(a.out, exist_ok=True)
    Path(a.out, "shift_robustness.json").write_text(json.dumps({"groups": a.group, "results": results}, indent=2))
    Path(a.out, "shift_robustness.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
