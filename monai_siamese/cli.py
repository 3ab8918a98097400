"""Command line: ``python -m monai_siamese {demo,validate,import,evaluate}``. Argument parsing only: every command
calls the library (:mod:`monai_siamese.demo`, :mod:`monai_siamese.data`, :mod:`monai_siamese.evaluation`)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from monai_siamese.bundles import GENERATORS
from monai_siamese.evaluation.config import CLI_OPTIONS

__all__ = ["main", "build_parser"]

def _split_list(text: str, kind: str) -> list:
    items = [v for v in text.replace(" ", "").split(";" if kind == "sources" else ",") if v]
    return [int(v) for v in items] if kind == "ints" else items


def _cmd_demo(args: argparse.Namespace) -> int:
    from monai_siamese.demo import run_demo

    run_demo(args.out, args.method, args.iterations, args.steps, args.samples_per_mask)
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from monai_siamese.data.datalist import DatalistError
    from monai_siamese.data.validate import validate_datalist_file

    mapping = {int(k): int(v) for k, v in json.loads(args.label_mapping).items()} if args.label_mapping else None
    try:
        problems, total, splits = validate_datalist_file(
            args.datalist,
            args.num_classes,
            args.splits.split(",") if args.splits else None,
            args.dataset_dir,
            label_mapping=mapping,
            label_threshold=args.label_threshold,
            require_image=not args.masks_only,
            allow_empty_label=args.allow_empty_labels,
        )
    except DatalistError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for p in problems:
        print(p)
    if problems:
        print(f"{len(problems)} problem(s) in {total} entries of {args.datalist}", file=sys.stderr)
        return 1
    print(f"OK: {total} entries of {args.datalist} ({', '.join(splits)}) checked, no problem found")
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    from monai_siamese.data.importers import ImportError_, import_layout

    takes = {"val_fraction": ("pranet", "siamese", "meddiff"), "root": ("siamese", "meddiff")}
    kwargs = {k: getattr(args, k) for k, layouts in takes.items() if args.layout in layouts and getattr(args, k)}
    try:
        splits = import_layout(args.layout, args.source, out=args.out, masks=args.masks, **kwargs)
    except ImportError_ as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.out} ({', '.join(f'{k}: {len(v)}' for k, v in splits.items())})")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from monai_siamese.evaluation import preset_config, run_evaluation

    values = {}
    for name, kind, _ in CLI_OPTIONS:
        raw = getattr(args, name)
        if raw is not None:
            values[name] = _split_list(raw, kind) if isinstance(kind, str) else raw
    for item in args.set or []:
        key, _, raw = item.partition("=")
        try:
            values[key] = json.loads(raw)
        except json.JSONDecodeError:
            values[key] = raw
    try:
        cfg = preset_config(args.preset).update(values)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    run_evaluation(cfg, args.out, argv=args.argv)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m monai_siamese", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="build the MNI152 demo data, train briefly on CPU, sample and write pairs")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--method", default=GENERATORS[0], choices=GENERATORS)
    p.add_argument("--iterations", type=int, default=None, help="training iterations (default: the demo config's)")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the config's)")
    p.add_argument("--samples_per_mask", type=int, default=1)
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("validate", help="check every entry of a datalist; one line per problem")
    p.add_argument("--datalist", required=True)
    p.add_argument("--dataset_dir", default=None, help="base folder for relative paths (default: the datalist's)")
    p.add_argument("--splits", default=None, help="comma-separated splits (default: all)")
    p.add_argument("--num_classes", type=int, default=None, help="classes incl. background (default: the datalist's)")
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
        description="Runs (or resumes) the protocol of monai_siamese.evaluation. Presets: demo (CPU, demo data), "
        "full (GPU), micro (plumbing).",
    )
    p.add_argument("--out", required=True, help="output folder (an interrupted evaluation resumes from it)")
    p.add_argument("--preset", default="demo", choices=["demo", "full", "micro"])
    for name, kind, text in CLI_OPTIONS:
        p.add_argument(f"--{name}", type=kind if callable(kind) else str, default=None, help=text)
    p.add_argument("--set", action="append", metavar="KEY=JSON", help="any other setting (repeatable)")
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
