"""Common random numbers in the overhead benchmark: with torch seeded alike before a block, the bundle's trainer and
the plain loop draw the same timesteps, so Siamese-Diffusion's late phase runs online augmentation for the same
samples in both; without the seed the counts differ block by block (and the throughput with them).

    OMP_NUM_THREADS=1 python docs/results/benchmark_overhead/round11/crn_check.py [SIZE] [BLOCKS]

Prints, per block, the online-augmentation samples of each variant (timesteps <= oa_max_t) and both throughputs.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[4] / "scripts"))
from bench.bundle_setup import PlainLoop, bundle_parser  # noqa: E402
from bench.overhead import PHASES, _bundle_blocks  # noqa: E402


def main(size: int = 32, blocks: int = 4) -> None:
    torch.set_num_threads(1)
    over = {"num_iterations": 100_000, "epoch_length": 1000, **PHASES["late"][0]}
    work = Path(tempfile.mkdtemp())
    ours = _bundle_blocks("siamese_diffusion", over, work / "ours", "cpu", size, 8, 10)
    p = bundle_parser("siamese_diffusion", overrides=over, work_dir=work / "plain", device="cpu", size=size, batch=8)
    plain = PlainLoop(p, 10, "siamese_diffusion", image_weight=0.5, oa_active=True)
    seen: list[tuple[int, float]] = []

    def record(module, args, kwargs):  # the network's (x0, noise, t, cond, hint, w_i, oa_select)
        oa = args[6] if len(args) > 6 else kwargs.get("oa_select")
        seen.append((-1 if oa is None else int(oa.sum()), float(args[2].float().sum())))

    ours.trainer.network.register_forward_pre_hook(record, with_kwargs=True)
    plain.network.register_forward_pre_hook(record, with_kwargs=True)
    ours()  # the trainer's first iteration (online augmentation turns on after it)
    for seeded in (True, False):
        for k in range(blocks):
            rates = []
            counts = []
            for run in (ours, plain):
                seen.clear()
                if seeded:
                    torch.manual_seed(1000 + k)
                rates.append(run().items_per_cpu_s)
                counts.append((sum(c for c, _ in seen), sum(t for _, t in seen)))
            same = "same timesteps" if counts[0][1] == counts[1][1] else "other timesteps"
            print(
                f"{'seeded' if seeded else 'unseeded'} block {k}: online-augmentation samples bundle {counts[0][0]}, "
                f"plain {counts[1][0]} ({same}); img/CPU-s bundle {rates[0]:.1f}, plain {rates[1]:.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
