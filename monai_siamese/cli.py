"""Command line: ``python -m monai_siamese {demo,validate,import,evaluate}``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["main", "bundles_dir", "run_bundle", "run_demo"]

METHODS = ("seg_guided_diffusion", "siamese_diffusion", "meddiff_ft")
#: methods that fine-tune another bundle's model: the demo trains that base model first
BASE_METHOD = {"meddiff_ft": "seg_guided_diffusion"}


def bundles_dir() -> Path:
    """The ``bundles/`` folder (``$MONAI_SIAMESE_BUNDLES`` or the one beside the package)."""
    env = os.environ.get("MONAI_SIAMESE_BUNDLES")
    if env:
        return Path(env)
    from monai_siamese.utils import repo_root

    return repo_root() / "bundles"


def run_bundle(
    bundle: str | os.PathLike,
    configs: Sequence[str],
    run_id: str = "run",
    workflow_type: str = "train",
    overrides: Mapping[str, Any] | None = None,
) -> Any:
    """Run a bundle workflow in-process through ``monai.bundle.ConfigWorkflow`` (what ``python -m monai.bundle
    run`` does), with ``configs`` named relative to the bundle's ``configs/`` folder."""
    from monai.bundle import ConfigWorkflow

    bundle = Path(bundle)
    files = [str(bundle / "configs" / c) for c in configs]
    wf = ConfigWorkflow(
        config_file=files,
        meta_file=str(bundle / "configs" / "metadata.json"),
        logging_file=str(bundle / "configs" / "logging.conf"),
        workflow_type=workflow_type,
        run_id=run_id,
        bundle_root=str(bundle),
        **dict(overrides or {}),
    )
    wf.initialize()
    try:
        return wf.run()
    finally:
        wf.finalize()


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
    """Build the demo data, train ``method`` briefly with its CPU ``demo.json`` override, sample pairs from the
    training masks and write them to ``out/synthetic``."""
    from monai_siamese.data.demo import ensure_demo_data

    t0 = time.time()
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    bundle = bundles_dir() / method
    if not (bundle / "configs" / "train.json").is_file():
        raise FileNotFoundError(f"{bundle}: bundle not found (set MONAI_SIAMESE_BUNDLES to the repo's bundles/ folder)")
    data = ensure_demo_data()
    t_data = time.time()
    print(f"[demo] data: {data} ({t_data - t0:.0f}s)", flush=True)
    paths = {"ckpt_dir": str(out / "models"), "dataset_dir": data}
    train_over: dict[str, Any] = {**paths, "log_dir": str(out / "logs"), "sample_dir": str(out / "samples")}
    if iterations is not None:
        train_over["num_iterations"] = iterations
    if method in BASE_METHOD:
        base_dir = out / "base"
        weights = base_dir / "models" / "model.safetensors"
        if not weights.is_file():
            print(f"[demo] {method} fine-tunes a {BASE_METHOD[method]} model: training it first", flush=True)
            base_over = {
                "ckpt_dir": str(base_dir / "models"),
                "log_dir": str(base_dir / "logs"),
                "sample_dir": str(base_dir / "samples"),
                "dataset_dir": data,
            }
            if iterations is not None:
                base_over["num_iterations"] = iterations
            run_bundle(bundles_dir() / BASE_METHOD[method], ["train.json", "demo.json"], "run", "train", base_over)
        train_over["pretrained_path"] = str(weights)
    run_bundle(bundle, ["train.json", "demo.json"], "run", "train", train_over)
    t_train = time.time()
    print(f"[demo] training done ({t_train - t_data:.0f}s), sample grids in {out / 'samples'}", flush=True)
    infer_over: dict[str, Any] = {**paths, "output_dir": str(out / "synthetic"), "samples_per_mask": samples_per_mask}
    if num_inference_steps is not None:
        infer_over["num_inference_steps"] = num_inference_steps
    run_bundle(bundle, ["inference.json", "demo.json"], "run", "infer", infer_over)
    t_inf = time.time()
    grid_png = _demo_grid(out / "synthetic", out / "synthetic_pairs.png")
    n_pairs = len(json.loads((out / "synthetic" / "datalist.json").read_text())["training"])
    means = class_intensity_means(out / "synthetic", 4)
    summary = {
        "method": method,
        "data": data,
        "pairs": n_pairs,
        "class_mean_intensity": {"classes": "1 CSF, 2 GM, 3 WM (MR preset scale, -1..1)", **means},
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
    from monai_siamese.utils import atomic_write_json

    atomic_write_json(out / "demo_summary.json", summary)
    print(f"[demo] {n_pairs} synthetic pairs in {out / 'synthetic'} ({t_inf - t_train:.0f}s)")
    print(f"[demo] pairs grid (mask | generated | real): {grid_png}")
    gen, real = means["generated"], means.get("real", {})
    print(
        "[demo] mean intensity per class, generated (real): "
        + ", ".join(
            f"{n} {gen.get(str(c), float('nan')):+.2f} ({real.get(str(c), float('nan')):+.2f})"
            for c, n in ((1, "CSF"), (2, "GM"), (3, "WM"))
        )
    )
    print(f"[demo] total {summary['seconds']['total']:.0f}s; summary: {out / 'demo_summary.json'}")
    return summary


def _num_classes(args: argparse.Namespace, content: Mapping) -> int:
    if args.num_classes:
        return int(args.num_classes)
    if "num_classes" in content:
        return int(content["num_classes"])
    if isinstance(content.get("labels"), Mapping):
        return len(content["labels"])
    raise SystemExit("error: the datalist has no 'num_classes' or 'labels': pass --num_classes")


def _cmd_validate(args: argparse.Namespace) -> int:
    from monai_siamese.data.datalist import DatalistError, datalist_splits, load_datalist, read_datalist_file
    from monai_siamese.data.validate import validate_datalist

    try:
        content = read_datalist_file(args.datalist)
        splits = args.splits.split(",") if args.splits else datalist_splits(content)
        entries = []
        for split in splits:
            entries += load_datalist(args.datalist, split, args.dataset_dir)
    except DatalistError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    mapping = {int(k): int(v) for k, v in json.loads(args.label_mapping).items()} if args.label_mapping else None
    problems = validate_datalist(
        entries,
        _num_classes(args, content),
        label_mapping=mapping,
        label_threshold=args.label_threshold,
        require_image=not args.masks_only,
        allow_empty_label=args.allow_empty_labels,
    )
    for p in problems:
        print(p)
    if problems:
        print(f"{len(problems)} problem(s) in {len(entries)} entries of {args.datalist}", file=sys.stderr)
        return 1
    print(f"OK: {len(entries)} entries of {args.datalist} ({', '.join(splits)}) checked, no problem found")
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    from monai_siamese.data.importers import ImportError_, import_layout

    kwargs: dict[str, Any] = {}
    if args.layout in ("pranet", "siamese", "meddiff") and args.val_fraction is not None:
        kwargs["val_fraction"] = args.val_fraction
    if args.layout in ("siamese", "meddiff") and args.root:
        kwargs["root"] = args.root
    try:
        splits = import_layout(args.layout, args.source, out=args.out, masks=args.masks, **kwargs)
    except ImportError_ as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    counts = ", ".join(f"{k}: {len(v)}" for k, v in splits.items())
    print(f"wrote {args.out} ({counts})")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    run_demo(args.out, args.method, args.iterations, args.steps, args.samples_per_mask)
    return 0


def _int_list(text: str) -> list[int]:
    return [int(v) for v in text.replace(" ", "").split(",") if v]


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from monai_siamese.evaluation import preset_config, run_evaluation

    cfg = preset_config(args.preset)
    values: dict[str, Any] = {}
    for name in (
        "datalist",
        "dataset_dir",
        "num_classes",
        "seg_iterations",
        "seg_batch_size",
        "seg_spatial_size",
        "gen_iterations",
        "synthetic_ratio",
        "samples_per_mask",
        "mask_source",
        "mask_datalist",
        "mask_split",
        "inception_weights",
        "device",
        "test_split",
    ):
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
    if args.regimes:
        values["regimes"] = _int_list(args.regimes)
    if args.seeds:
        values["seeds"] = _int_list(args.seeds)
    if args.methods:
        values["methods"] = [m for m in args.methods.split(",") if m]
    for item in args.set or []:
        key, _, raw = item.partition("=")
        try:
            values[key] = json.loads(raw)
        except json.JSONDecodeError:
            values[key] = raw
    try:
        cfg = cfg.update(values)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    run_evaluation(cfg, args.out, argv=getattr(args, "argv", None))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m monai_siamese", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="build the MNI152 demo data, train briefly on CPU, sample and write pairs")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--method", default="seg_guided_diffusion", choices=METHODS)
    p.add_argument("--iterations", type=int, default=None, help="training iterations (default: the demo config's)")
    p.add_argument("--steps", type=int, default=None, help="DDIM sampling steps (default: the config's)")
    p.add_argument("--samples_per_mask", type=int, default=1)
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("validate", help="check every entry of a datalist; one line per problem")
    p.add_argument("--datalist", required=True)
    p.add_argument("--dataset_dir", default=None, help="base folder for relative paths (default: the datalist's)")
    p.add_argument("--splits", default=None, help="comma-separated splits (default: all)")
    p.add_argument(
        "--num_classes", type=int, default=None, help="classes incl. background (default: from the datalist)"
    )
    p.add_argument("--label_mapping", default=None, help='JSON {"value": class} remap, e.g. \'{"255": 1}\'')
    p.add_argument("--label_threshold", type=float, default=None, help="binarise lossy masks at this value")
    p.add_argument("--masks_only", action="store_true", help="entries may have no image")
    p.add_argument("--allow_empty_labels", action="store_true", help="accept background-only labels")
    p.set_defaults(func=_cmd_validate)

    p = sub.add_parser("import", help="turn a reference project's layout into a MONAI datalist")
    p.add_argument("layout", choices=["pranet", "siamese", "segguided", "meddiff"])
    p.add_argument("source", help="root (pranet), prompt.json (siamese), DATA_FOLDER (segguided), data.json (meddiff)")
    p.add_argument("--out", required=True, help="datalist JSON to write")
    p.add_argument("--masks", default=None, help="MASK_FOLDER for segguided")
    p.add_argument("--root", default=None, help="base folder for relative paths (siamese, meddiff)")
    p.add_argument("--val_fraction", type=float, default=None)
    p.set_defaults(func=_cmd_import)

    p = sub.add_parser(
        "evaluate",
        help="segmentation trained on real vs real + synthetic data in low-data regimes; writes report.md",
        description="Runs (or resumes) the evaluation protocol: per regime N and seed, draw N real slices, train each "
        "generator on them, sample, train the segmentation bundle on real only and on real + synthetic (same "
        "iterations and seed), score on the held-out real test split; plus faithfulness, FID/KID, MS-SSIM of the "
        "synthetic sets. Presets: demo (CPU, demo data; about 40 min per generator method on 2 cores), full (GPU), micro (plumbing check).",
    )
    p.add_argument("--out", required=True, help="output folder (an interrupted evaluation resumes from it)")
    p.add_argument("--preset", default="demo", choices=["demo", "full", "micro"])
    p.add_argument("--datalist", default=None, help="real datalist with the pool and test splits (default: demo)")
    p.add_argument("--dataset_dir", default=None)
    p.add_argument("--num_classes", type=int, default=None)
    p.add_argument("--regimes", default=None, help="numbers of real training slices, e.g. 4,8")
    p.add_argument("--seeds", default=None, help="seeds, e.g. 0,1,2")
    p.add_argument("--methods", default=None, help="generator bundles (default: every one under bundles/)")
    p.add_argument("--seg_iterations", type=int, default=None)
    p.add_argument("--seg_batch_size", type=int, default=None)
    p.add_argument("--seg_spatial_size", type=int, default=None)
    p.add_argument("--gen_iterations", type=int, default=None)
    p.add_argument("--synthetic_ratio", type=float, default=None, help="synthetic fraction of every batch")
    p.add_argument("--samples_per_mask", type=int, default=None)
    p.add_argument("--mask_source", default=None, help="regime (default), datalist, or a registered source")
    p.add_argument("--mask_datalist", default=None)
    p.add_argument("--mask_split", default=None)
    p.add_argument("--test_split", default=None)
    p.add_argument("--inception_weights", default=None, help="local TorchScript Inception file for Inception FID")
    p.add_argument("--device", default=None)
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=JSON",
        help="any other setting, e.g. --set 'seg_overrides={\"lr\": 0.002}' (repeatable)",
    )
    p.set_defaults(func=_cmd_evaluate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
