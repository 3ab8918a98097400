"""Siamese-Diffusion's bundle iteration against the plain loop of the same process, op by op: both run 4 blocks of
10 iterations with the same seeds (common random numbers: the same timesteps, the same online-augmentation samples)
without and then under ``torch.profiler``; prints each variant's minor page faults and CPU seconds per iteration
(unprofiled blocks: the CPU time moves with the machine's load) and the total self CPU time of its aten ops, then
the ops whose self CPU time differs most and every op whose call count differs. Counts do not depend on the
machine's load; the times (inflated by the profiler) only rank what differs.

    OMP_NUM_THREADS=1 python docs/results/benchmark_overhead/round12/profile_ops.py [early|late] [SIZE]
"""

from __future__ import annotations

import collections
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[4] / "scripts"))
from bench.bundle_setup import PlainLoop, bundle_parser  # noqa: E402
from bench.overhead import PHASES, _bundle_blocks  # noqa: E402


def main(phase: str = "late", size: int = 32, blocks: int = 4) -> None:
    torch.set_num_threads(1)
    over = {"num_iterations": 100_000, "epoch_length": 1000, **PHASES[phase][0]}
    work = Path(tempfile.mkdtemp())
    ours = _bundle_blocks("siamese_diffusion", over, work / "ours", "cpu", size, 8, 10)
    p = bundle_parser("siamese_diffusion", overrides=over, work_dir=work / "plain", device="cpu", size=size, batch=8)
    plain = PlainLoop(p, 10, "siamese_diffusion", image_weight=0.5, oa_active=PHASES[phase][1])
    ours(), plain()  # warm-up (the trainer's first iteration turns online augmentation on)
    stats = {}
    for name, run in (("bundle", ours), ("plain", plain)):
        times, counts = collections.Counter(), collections.Counter()
        faults, cpu = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.process_time()
        for k in range(blocks):
            torch.manual_seed(1000 + k)
            run()
        faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / (10 * blocks)
        cpu = (time.process_time() - cpu) / (10 * blocks)
        for k in range(blocks):
            torch.manual_seed(1000 + k)
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                run()
            for e in prof.key_averages():
                times[e.key] += e.self_cpu_time_total
                counts[e.key] += e.count
        stats[name] = (times, counts)
        print(
            f"{name}: {faults:.0f} minor faults and {cpu * 1000:.0f} ms CPU per iteration (unprofiled); "
            f"{sum(times.values()) / 1000:.0f} ms self CPU of aten ops in {blocks * 10} profiled iterations"
        )
    (bt, bc), (pt, pc) = stats["bundle"], stats["plain"]
    keys = set(bt) | set(pt)
    print(f"\n{'op':55s} {'bundle ms':>10s} {'plain ms':>10s} {'bundle n':>9s} {'plain n':>9s}")
    for k in sorted(keys, key=lambda k: -(bt[k] - pt[k]))[:30]:
        print(f"{k[:55]:55s} {bt[k] / 1000:10.1f} {pt[k] / 1000:10.1f} {bc[k]:9d} {pc[k]:9d}")
    print("\ncall counts that differ:")
    for k in sorted(k for k in keys if bc[k] != pc[k]):
        print(f"{k[:55]:55s} {bc[k]:9d} {pc[k]:9d}")
    sys.stdout.flush()
    os._exit(0)  # the interrupted trainer's generator would log its GeneratorExit at interpreter exit


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "late", *(int(a) for a in sys.argv[2:3]))
