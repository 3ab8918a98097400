"""The geometric mean of the per-repeat ratios bundle / plain (CPU clock) with its 95 % t-interval, read back from
the raw blocks of ``--overhead`` result files (those written before the harness reported it too).

    python docs/results/benchmark_overhead/round11/intervals.py docs/results/benchmark_overhead/overhead_round10.json ...
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[4] / "scripts"))
from bench.timing import Block, Interleaved  # noqa: E402

REFERENCES = {"plain": "plain loop, same process", "plain_own_process": "plain loop, own process"}


def main(paths: list[str]) -> None:
    print("| file | case | reference | median (min-max) | geometric mean [95 % CI] | repeats |")
    print("|---|---|---|---|---|---|")
    for path in paths:
        results = json.loads(Path(path).read_text())
        for key, r in results.get("overhead", results).items():
            blocks = {
                name: [Block(b["items"], b["wall_s"], b["cpu_s"]) for b in r[name]["blocks"]]
                for name in ("bundle", *REFERENCES)
                if name in r
            }
            inter = Interleaved(blocks)
            for ref, label in REFERENCES.items():
                if ref not in blocks:
                    continue
                s, ci = inter.ratio("bundle", ref, "cpu"), inter.ratio_interval("bundle", ref, "cpu")
                print(
                    f"| {Path(path).name} | {key} | {label} | {s['median']:.2f} ({s['min']:.2f}-{s['max']:.2f}) | "
                    f"{ci['geomean']:.3f} [{ci['low']:.3f}, {ci['high']:.3f}] | {ci['n']} |"
                )


if __name__ == "__main__":
    main(sys.argv[1:])
