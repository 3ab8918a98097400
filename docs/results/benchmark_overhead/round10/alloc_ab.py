"""The allocator setting alone: two plain loops, each in a process of its own (spawned), one with the bundles'
``cpu_allocator_tuning`` and one at glibc's defaults, their blocks interleaved; ratio tuned / default images per CPU
second, median (min-max) over the repeats.

    OMP_NUM_THREADS=1 python docs/results/benchmark_overhead/round10/alloc_ab.py METHOD SIZE [REPEATS]
"""
import pathlib
import statistics
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[4] / "scripts"))
from bench import overhead  # noqa: E402


def make_loop(method: str, size: int, tune: bool, work: str) -> overhead.OwnProcessPlainLoop:
    over = {"num_iterations": 100_000}
    return overhead.OwnProcessPlainLoop(method, over, pathlib.Path(work), "cpu", size, 8, 10, allocator_tuning=tune)


if __name__ == "__main__":
    method, size = sys.argv[1], int(sys.argv[2])
    repeats = int(sys.argv[3]) if len(sys.argv) > 3 else 7
    work = tempfile.mkdtemp()
    loops = {"default": make_loop(method, size, False, work + "/d"), "tuned": make_loop(method, size, True, work + "/t")}
    for loop in loops.values():
        loop()  # warm-up
    rates = {k: [] for k in loops}
    for _ in range(repeats):
        for k, loop in loops.items():
            rates[k].append(loop().items_per_cpu_s)
    ratios = [t / d for t, d in zip(rates["tuned"], rates["default"])]
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(f"{method}@{size}: default {med['default']:.1f}, tuned {med['tuned']:.1f} img/CPU-s; tuned / default "
          f"{statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f}) over {repeats} repeats")
    for loop in loops.values():
        loop.close()
