"""One AdamW step over a bundle's network parameters with torch's three implementations: single-tensor (torch's
CPU default), ``foreach`` and fused (what the bundles use where torch has the kernel: ``fused_adamw_available``).
The gradients are fixed random tensors, so only the optimizer step is timed.

Timing: the three in one process, interleaved in blocks of ``--steps`` steps (single, foreach, fused, ...),
``--repeats`` rounds after a warm-up round; milliseconds per step on the CPU clock as the median with the min-max, and
the per-round ratios against single-tensor.

    OMP_NUM_THREADS=1 python scripts/benchmark_adamw.py --steps 20 --repeats 7
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

#: (bundle, network key, config files): the networks the demo preset trains
NETWORKS = {
    "seg_guided_diffusion": ("network_def", ["train.json", "demo.json"]),
    "segmentation": ("network_def", ["train.json"]),
}
IMPLEMENTATIONS = {"single": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=list(NETWORKS), help="bundles' networks")
    p.add_argument("--steps", type=int, default=20, help="optimizer steps per timed block")
    p.add_argument("--repeats", type=int, default=7, help="timed rounds (>= 3)")
    p.add_argument("--out", default=None, help="optional JSON result file")
    return p


def main(argv: list[str] | None = None) -> dict:
    from bench.bundle_setup import bundle_parser
    from monai_siamese.engines import fused_adamw_available

    args = parser().parse_args(argv)
    torch.set_num_threads(1)
    impls = {k: v for k, v in IMPLEMENTATIONS.items() if k != "fused" or fused_adamw_available("cpu")}
    results: dict = {"steps": args.steps, "repeats": args.repeats, "torch": torch.__version__, "networks": {}}
    for name in args.networks:
        key, configs = NETWORKS[name]
        with tempfile.TemporaryDirectory() as tmp:
            net = bundle_parser(name, configs, work_dir=tmp).get_parsed_content(key)
        gen = torch.Generator().manual_seed(0)
        variants = {}
        for impl, kwargs in impls.items():
            params = [torch.nn.Parameter(p.detach().clone()) for p in net.parameters()]
            for p in params:
                p.grad = torch.randn(p.shape, generator=gen)
            opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01, **kwargs)

            def run(opt=opt) -> int:
                for _ in range(args.steps):
                    opt.step()
                return args.steps

            variants[impl] = lambda run=run: timed(run)
        inter = interleave(variants, repeats=args.repeats)
        ms = {k: 1e3 / inter.rate(k, "cpu")["median"] for k in impls}
        res = {
            "parameters": sum(p.numel() for p in net.parameters()),
            "tensors": len(list(net.parameters())),
            "ms_per_step_cpu": ms,
            "speedup_vs_single_cpu": {k: inter.ratio(k, "single", "cpu") for k in impls if k != "single"},
            **inter.summary(),
        }
        results["networks"][name] = res
        speed = ", ".join(f"{k} {fmt_spread(v)}" for k, v in res["speedup_vs_single_cpu"].items())
        print(
            f"{name} ({res['parameters'] / 1e6:.2f} M parameters in {res['tensors']} tensors): "
            + ", ".join(f"{k} {v:.2f} ms" for k, v in ms.items())
            + f" per step (CPU clock); speed-up over single-tensor: {speed}"
        )
    if args.out:
        from monai_siamese.utils import atomic_write_json

        atomic_write_json(args.out, results)
    return results


if __name__ == "__main__":
    main()
