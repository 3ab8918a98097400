"""The demo: build the MNI152 demo data, train a generator briefly with its CPU ``demo.json`` override, sample one
pair per training mask and write them with a preview grid (``python -m monai_siamese demo``)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from monai_siamese.bundles import base_of, bundle_path, folder_overrides, run_bundle, spec

__all__ = ["run_demo", "run_volume_demo", "class_intensity_means"]


def _demo_grid(synthetic_dir: Path, out_png: Path, rows: int = 8) -> str | None:
    """A grid of generated pairs: mask | generated image | the real image of the source slice."""
    import torch
    from monai.transforms import LoadImage

    from monai_siamese.data.intensity import ScaleIntensityPresetd
    from monai_siamese.data.visualize import grid, label_to_rgb, save_png, to_uint8

    datalist = json.loads((synthetic_dir / "datalist.json").read_text())["training"]
    if not datalist:
        return None
    step = max(1, len(datalist) // rows)
    load = LoadImage(image_only=True, ensure_channel_first=True)
    scale = ScaleIntensityPresetd("image", preset="mr")
    tiles = []
    for e in datalist[::step][:rows]:
        img = scale({"image": load(str(synthetic_dir / e["image"]))})["image"]
        lab = load(str(synthetic_dir / e["label"]))
        row = [label_to_rgb(lab), to_uint8(img)]
        src = e.get("source_image")
        if src and os.path.exists(src):
            real = scale({"image": load(src)})["image"]
            if real.shape == img.shape:
                row.append(to_uint8(real))
            else:
                row.append(to_uint8(torch.nn.functional.interpolate(real[None].float(), img.shape[1:], mode="area")[0]))
        tiles.append(row)
    return save_png(grid(tiles), out_png)


def class_intensity_means(synthetic_dir: str | os.PathLike, num_classes: int) -> dict[str, dict[str, float]]:
    """Mean intensity per class (MR preset scale, [-1, 1]) of the generated images and of their source images,
    over a synthetic folder: a quick check that generated tissue follows the mask's contrast."""
    import torch
    from monai.transforms import LoadImage, Resize

    from monai_siamese.data.intensity import ScaleIntensityPresetd

    folder = Path(synthetic_dir)
    entries = json.loads((folder / "datalist.json").read_text())["training"]
    load = LoadImage(image_only=True, ensure_channel_first=True)
    scale = ScaleIntensityPresetd("image", preset="mr")
    sums = {k: torch.zeros(num_classes, dtype=torch.float64) for k in ("generated", "real")}
    counts = torch.zeros(num_classes, dtype=torch.float64)
    for e in entries:
        img = scale({"image": load(str(folder / e["image"]))})["image"]
        lab = load(str(folder / e["label"])).long()
        real = scale({"image": load(e["source_image"])})["image"] if e.get("source_image") else None
        if real is not None and real.shape != img.shape:
            real = Resize(img.shape[1:], mode="area")(real)
        for c in range(num_classes):
            m = lab == c
            n = int(m.sum())
            if n == 0:
                continue
            counts[c] += n
            sums["generated"][c] += float(img[m].sum())
            if real is not None:
                sums["real"][c] += float(real[m].sum())
    out = {}
    for k, v in sums.items():
        out[k] = {str(c): round(float(v[c] / counts[c]), 4) for c in range(num_classes) if counts[c] > 0}
    return out


def run_demo(
    out: str | os.PathLike,
    method: str = "seg_guided_diffusion",
    iterations: int | None = None,
    num_inference_steps: int | None = None,
    samples_per_mask: int = 1,
) -> dict[str, Any]:
    """Build the demo data, train ``method`` briefly with its CPU ``demo.json`` override (its base generator first,
    for a method that fine-tunes one), sample pairs from the training masks and write them to ``out/synthetic``.

    Args:
        out: output folder (``models/``, ``samples/``, ``synthetic/``, ``synthetic_pairs.png``, ``demo_summary.json``).
        method: a generator bundle of the registry.
        iterations: training iterations (default: the demo config's).
        num_inference_steps: sampling steps (default: the demo config's).
        samples_per_mask: synthetic pairs per training mask.
    """
    from monai_siamese.data.datalist import read_datalist_file
    from monai_siamese.data.demo import ensure_demo_data
    from monai_siamese.utils import atomic_write_json

    t0 = time.time()
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    bundle = bundle_path(method)
    if not (bundle / "configs" / "train.json").is_file():
        raise FileNotFoundError(f"{bundle}: bundle not found (set MONAI_SIAMESE_BUNDLES to the repo's bundles/ folder)")
    data = ensure_demo_data()
    content = read_datalist_file(Path(data) / "datalist.json")
    names = {int(k): str(v) for k, v in content["labels"].items()}
    t_data = time.time()
    print(f"[demo] data: {data} ({t_data - t0:.0f}s)", flush=True)
    common: dict[str, Any] = {"dataset_dir": data}
    if iterations is not None:
        common["num_iterations"] = iterations
    base = base_of(method)
    train_over: dict[str, Any] = {**common, **folder_overrides(out)}
    if base is not None:
        weights = out / "base" / "models" / "model.safetensors"
        if not weights.is_file():
            print(f"[demo] {method} fine-tunes a {base} model: training it first", flush=True)
            run_bundle(base, ["train.json", "demo.json"], "run", "train", {**common, **folder_overrides(out / "base")})
        train_over[spec(method).pretrained_key] = str(weights)
    run_bundle(bundle, ["train.json", "demo.json"], "run", "train", train_over)
    t_train = time.time()
    print(f"[demo] training done ({t_train - t_data:.0f}s), sample grids in {out / 'samples'}", flush=True)
    infer_over: dict[str, Any] = {
        "dataset_dir": data,
        "ckpt_dir": str(out / "models"),
        "output_dir": str(out / "synthetic"),
        "samples_per_mask": samples_per_mask,
    }
    if num_inference_steps is not None:
        infer_over["num_inference_steps"] = num_inference_steps
    run_bundle(bundle, ["inference.json", "demo.json"], "run", "infer", infer_over)
    t_inf = time.time()
    grid_png = _demo_grid(out / "synthetic", out / "synthetic_pairs.png")
    n_pairs = len(json.loads((out / "synthetic" / "datalist.json").read_text())["training"])
    means = class_intensity_means(out / "synthetic", len(names))
    classes = ", ".join(f"{c} {names[c]}" for c in sorted(names) if c > 0)
    summary = {
        "method": method,
        "data": data,
        "pairs": n_pairs,
        "class_mean_intensity": {"classes": f"{classes} (MR preset scale, -1..1)", **means},
        "synthetic_dir": str(out / "synthetic"),
        "datalist": str(out / "synthetic" / "datalist.json"),
        "training_grid": str(out / "samples" / "latest.png"),
        "pairs_grid": grid_png,
        "seconds": {
            "data": round(t_data - t0, 1),
            "training": round(t_train - t_data, 1),
            "sampling": round(t_inf - t_train, 1),
            "total": round(time.time() - t0, 1),
        },
    }
    atomic_write_json(out / "demo_summary.json", summary)
    print(f"[demo] {n_pairs} synthetic pairs in {out / 'synthetic'} ({t_inf - t_train:.0f}s)")
    print(f"[demo] pairs grid (mask | generated | real): {grid_png}")
    gen, real = means["generated"], means.get("real", {})
    print(
        "[demo] mean intensity per class, generated (real): "
        + ", ".join(
            f"{names[c]} {gen.get(str(c), float('nan')):+.2f} ({real.get(str(c), float('nan')):+.2f})"
            for c in sorted(names)
            if c > 0
        )
    )
    print(f"[demo] total {summary['seconds']['total']:.0f}s; summary: {out / 'demo_summary.json'}")
    return summary


def run_volume_demo(
    out: str | os.PathLike, iterations: int | None = None, method: str = "seg_guided_diffusion"
) -> dict[str, Any]:
    """The 3D example: train a generator with 2.5D context (``demo.json`` + ``context.json``) on the MNI152 demo
    volume, generate a whole volume from its label map (each slice conditioned on its neighbours' masks and the slice
    generated before it), and write the orthogonal reformats of the real and synthetic volumes with their
    adjacent-slice consistency. A fine-tuning method (``meddiff_ft``) first trains its base the same way (into
    ``base/``) and inpaints into the demo's real image as the canvas.

    Args:
        out: output folder (``models/``, ``volume/``, ``reformats.png``, ``volume_summary.json``).
        iterations: training iterations (default: the demo config's).
        method: generator bundle.
    """
    import nibabel as nib
    import numpy as np

    from monai_siamese.bundles import generate_volumes
    from monai_siamese.data import load_datalist
    from monai_siamese.data.demo import demo_volume_datalist
    from monai_siamese.quality import reformat_figure, volume_consistency
    from monai_siamese.utils import atomic_write_json

    t0 = time.time()
    out = Path(out).resolve()
    entry = load_datalist(demo_volume_datalist(), "training")[0]
    configs = ["demo.json", "context.json"]
    common: dict[str, Any] = {"num_iterations": iterations} if iterations is not None else {}
    over: dict[str, Any] = {**common, **folder_overrides(out)}
    base = base_of(method)
    if base is not None:
        run_bundle(base, ["train.json", *configs], "run", "train", {**common, **folder_overrides(out / "base")})
        over[spec(method).pretrained_key] = str(out / "base" / "models" / "model.safetensors")
    run_bundle(method, ["train.json", *configs], "run", "train", over)
    t_train = time.time()
    canvases = [entry["image"]] if base is not None else None  # a fine-tuner inpaints into the real image
    generate_volumes(method, [entry["label"]], out / "volume", ["inference.json", *configs],
                     {"ckpt_dir": str(out / "models")}, images=canvases)  # fmt: skip
    synthetic = json.loads((out / "volume" / "datalist.json").read_text())["training"][0]
    syn_path = out / "volume" / synthetic["image"]
    lab = nib.load(entry["label"])
    rows = {"real": np.asarray(nib.load(entry["image"]).dataobj), "synthetic": np.asarray(nib.load(syn_path).dataobj)}
    figure = reformat_figure(rows, lab.affine, out / "reformats.png", label=np.asarray(lab.dataobj))
    consistency = {
        "real": volume_consistency(entry["image"], entry["label"]),
        "synthetic": volume_consistency(syn_path, entry["label"]),
    }
    summary = {
        "method": method,
        "volume": str(syn_path),
        "reformats": figure,
        "adjacent_slice_similarity": consistency,
        "seconds": {"training": round(t_train - t0, 1), "total": round(time.time() - t0, 1)},
    }
    atomic_write_json(out / "volume_summary.json", summary)
    keys = ("ncc", "ssim", "jitter")
    for name, c in consistency.items():
        print(f"[demo] {name} volume adjacent-slice " + ", ".join(f"{k} {c[k]:.3f}" for k in keys if k in c))
    print(f"[demo] synthetic volume {syn_path} (the label's grid); reformats {figure}")
    return summary
