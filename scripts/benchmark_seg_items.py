"""Per-item cost of the segmentation bundle's training data path (``train#seeded_dataset``: the cached slice, then
flips, affine and the photometric transforms re-seeded with the item's own seed) with :func:`reseed` (generators
reused) against MONAI's ``set_random_state`` on the same transform tree (a ``np.random.RandomState`` constructed per
random transform per item). Both give the same items (checked here, item by item, before timing).

Timing: both variants in one process, interleaved in blocks of ``--items`` items (reseed, set_random_state, ...),
``--repeats`` rounds after a warm-up round; items per CPU second and per second, and their ratio per round, as the
median with the min-max.

    OMP_NUM_THREADS=1 python scripts/benchmark_seg_items.py --size 128 --items 150 --repeats 7
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
for _p in (str(REPO / "scripts"), str(REPO)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from bench.output import fmt_spread  # noqa: E402
from bench.timing import interleave, timed  # noqa: E402


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=128, help="spatial size of the segmentation input")
    p.add_argument("--items", type=int, default=150, help="items per timed block")
    p.add_argument("--repeats", type=int, default=7, help="timed rounds (>= 3)")
    p.add_argument("--intensity_prob", type=float, default=0.0, help="photometric augmentation (0: the presets')")
    p.add_argument("--datalist", default=None, help="datalist (default: the demo data)")
    p.add_argument("--out", default=None, help="optional JSON result file")
    return p


def main(argv: list[str] | None = None) -> dict:
    from monai.transforms import apply_transform

    from bench.bundle_setup import bundle_parser

    args = parser().parse_args(argv)
    torch.set_num_threads(1)
    over: dict = {"intensity_prob": args.intensity_prob}
    if args.datalist:
        over.update(datalist=args.datalist, dataset_dir=str(Path(args.datalist).parent))
    with tempfile.TemporaryDirectory() as tmp:
        config = bundle_parser("segmentation", ["train.json"], over, work_dir=tmp, size=args.size)
        ds = config.get_parsed_content("train#seeded_dataset")
    tree, n = ds.transform, len(ds.dataset)

    def with_set_random_state(key):
        index, seed = key
        tree.set_random_state(seed=seed)
        return apply_transform(tree, ds.dataset[index])

    check = [(j % n, 50_000 + j) for j in range(32)]
    same = all(
        torch.equal(torch.as_tensor(a[k]), torch.as_tensor(b[k]))
        for a, b in zip([ds[c] for c in check], [with_set_random_state(c) for c in check])
        for k in ("image", "label")
    )
    if not same:
        raise AssertionError("reseed and set_random_state give different items")
    counter = iter(range(10**9))

    def block(fn):
        def run() -> int:
            r = next(counter)
            for j in range(args.items):
                fn(((r * args.items + j) % n, 1000 * r + j))
            return args.items

        return lambda: timed(run)

    inter = interleave({"reseed": block(ds.__getitem__), "set_random_state": block(with_set_random_state)},
                       repeats=args.repeats)  # fmt: skip
    result = {
        "size": args.size,
        "items": args.items,
        "repeats": args.repeats,
        "intensity_prob": args.intensity_prob,
        "identical_items": same,
        "ms_per_item_cpu": {k: 1e3 / inter.rate(k, "cpu")["median"] for k in inter.blocks},  # median block
        "speedup_cpu": inter.ratio("reseed", "set_random_state", "cpu"),
        "speedup_wall": inter.ratio("reseed", "set_random_state", "wall"),
        **inter.summary(),
    }
    ms = result["ms_per_item_cpu"]
    print(
        f"segmentation data path at {args.size} x {args.size}, {args.repeats} x {args.items} items: "
        f"reseed {ms['reseed']:.2f} ms/item, set_random_state {ms['set_random_state']:.2f} "
        f"ms/item (CPU clock); speed-up {fmt_spread(result['speedup_cpu'])} (CPU), "
        f"{fmt_spread(result['speedup_wall'])} (wall); identical items: {same}"
    )
    if args.out:
        from monai_siamese.utils import atomic_write_json

        atomic_write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
