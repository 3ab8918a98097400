"""Command line: ``python -m monai_siamese {demo,validate,import,evaluate,volume}``. Argument parsing only: every
command calls the library (:mod:`monai_siamese.demo`, :mod:`monai_siamese.data`, :mod:`monai_siamese.evaluation`,
:mod:`monai_siamese.bundles`)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from monai_siamese.bundles import GENERATORS
from monai_siamese.errors import install_excepthook
from monai_siamese.evaluation.config import CLI_OPTIONS

__all__ = ["main", "build_parser"]


def _split_list(text: str, kind: str) -> list:
    items = [v for v in text.replace(" ", "").split(";" if kind == "sources" else ",") if v]
    return [int(v) for v in items] if kind == "ints" else items


def _cmd_demo(args: argparse.Namespace) -> int:
    from monai_siamese.demo import run_demo

    if args.volume:
        from monai_siamese.demo import run_volume_demo

        run_volume_demo(args.out, args.iterations, args.method)
    else:
        run_demo(args.out, args.method, args.iterations, args.steps, args.samples_per_mask)
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from monai_siamese.data.validate import validate_datalist_file

    mapping = {int(k): int(v) for k, v in json.loads(args.label_mapping).items()} if args.label_mapping else None
    splits = args.splits.split(",") if args.splits else None
    problems, total, splits = validate_datalist_file(
        args.datalist, args.num_classes, splits, args.dataset_dir, label_mapping=mapping,
        label_threshold=args.label_threshold, require_image=not args.masks_only, allow_empty_label=args.allow_empty_labels
    )  # fmt: skip
    for p in problems:
        print(p)
    if problems:
        print(f"{len(problems)} problem(s) in {total} entries of {args.datalist}", file=sys.stderr)
        return 1
    print(f"OK: {total} entries of {args.datalist} ({', '.join(splits)}) checked, no problem found")
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    from monai_siamese.data.importers import import_layout

    takes = {"val_fraction": ("pranet", "siamese", "meddiff"), "root": ("siamese", "meddiff")}
    kwargs = {k: getattr(args, k) for k, layouts in takes.items() if args.layout in layouts and getattr(args, k)}
    splits = import_layout(args.layout, args.source, out=args.out, masks=args.masks, **kwargs)
    print(f"wrote {args.out} ({', '.join(f'{k}: {len(v)}' for k, v in splits.items())})")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from monai_siamese.evaluation import preset_config, run_evaluation

    values = {}
    for name, kind, _ in CLI_OPTIONS:
        raw = getattr(args, name)
        if raw is not None:
            values[name] = _split_list(raw, kind) if isinstance(kind, str) else raw
    for key, _, raw in (item.partition("=") for item in args.set or []):
        values[key] = json.loads(raw) if raw[:1] in '[{"0123456789-' or raw in ("true", "false", "null") else raw
    run_evaluation(preset_config(args.preset).update(values), args.out, argv=args.argv)
    return 0


def _cmd_volume(args: argparse.Namespace) -> int:
    from monai_siamese.bundles import generate_volumes

    configs = ["inference.json", *[c for c in args.configs.split(",") if c]]
    over = {"ckpt_dir": args.ckpt_dir} if args.ckpt_dir else {}
    generate_volumes(args.bundle, args.label, args.out, configs, over, images=args.image)
    return 0


#: the subcommands: name -> (help, [(flag, add_argument keyword arguments)]); ``evaluate`` adds CLI_OPTIONS
COMMANDS: dict[str, tuple[str, list[tuple[str, dict]]]] = {
    "demo": ("build the MNI152 demo data, train briefly on CPU, sample and write pairs", [
        ("--out", {"required": True, "help": "output folder"}),
        ("--method", {"default": GENERATORS[0], "choices": GENERATORS}),
        ("--iterations", {"type": int, "help": "training iterations (default: the demo config's)"}),
        ("--steps", {"type": int, "help": "sampling steps (default: the config's)"}),
        ("--samples_per_mask", {"type": int, "default": 1}),
        ("--volume", {"action": "store_true", "help": "the 3D example: 2.5D training on the demo volume, one volume"})]),
    "validate": ("check every entry of a datalist; one line per problem", [
        ("--datalist", {"required": True}),
        ("--dataset_dir", {"help": "base folder for relative paths (default: the datalist's)"}),
        ("--splits", {"help": "comma-separated splits (default: all)"}),
        ("--num_classes", {"type": int, "help": "classes incl. background (default: the datalist's)"}),
        ("--label_mapping", {"help": 'JSON {"value": class} remap, e.g. \'{"255": 1}\''}),
        ("--label_threshold", {"type": float, "help": "binarise lossy masks at this value"}),
        ("--masks_only", {"action": "store_true", "help": "entries may have no image"}),
        ("--allow_empty_labels", {"action": "store_true", "help": "accept background-only labels"})]),
    "import": ("turn a reference project's layout into a MONAI datalist", [
        ("layout", {"choices": ["pranet", "siamese", "segguided", "meddiff"]}),
        ("source", {"help": "root (pranet), prompt.json (siamese), DATA_FOLDER (segguided), data.json (meddiff)"}),
        ("--out", {"required": True, "help": "datalist JSON to write"}),
        ("--masks", {"help": "MASK_FOLDER (segguided)"}), ("--root", {"help": "base of relative paths"}),
        ("--val_fraction", {"type": float, "help": "validation share"})]),
    "evaluate": ("segmentation on real vs real + synthetic data in low-data regimes (monai_siamese.evaluation); "
                 "presets: demo (CPU, demo data), full (GPU), micro (plumbing)", [
        ("--out", {"required": True, "help": "output folder (an interrupted evaluation resumes from it)"}),
        ("--preset", {"default": "demo", "choices": ["demo", "full", "micro"]}),
        *[(f"--{n}", {"type": k if callable(k) else str, "help": t}) for n, k, t in CLI_OPTIONS],
        ("--set", {"action": "append", "metavar": "KEY=JSON", "help": "any other setting (repeatable)"})]),
    "volume": ("whole synthetic NIfTI volumes from 3D label maps with a trained generator", [
        ("--bundle", {"default": GENERATORS[0], "choices": GENERATORS}),
        ("--label", {"required": True, "nargs": "+", "help": "3D label map(s) (NIfTI)"}),
        ("--image", {"nargs": "+", "help": "meddiff_ft: the real canvas volume of each label (same grid)"}),
        ("--out", {"required": True, "help": "output folder (images/, labels/, datalist.json)"}),
        ("--configs", {"default": "", "help": "configs it was trained with besides inference.json: demo.json,..."}),
        ("--ckpt_dir", {"help": "folder of the trained model.safetensors"})]),
}  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m monai_siamese", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (text, options) in COMMANDS.items():
        p = sub.add_parser(name, help=text, description=text)
        for flag, kwargs in options:
            p.add_argument(flag, **kwargs)
        p.set_defaults(func=globals()[f"_cmd_{name}"])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    install_excepthook(force=True)  # a bad input file or setting: one line naming it, status 1
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
