"""N = 4: the gains of the 128 x 128 `augmented` arms against those of the committed preset's 64 x 64 `augmented`
arms, run by run. The two results come from different machines, so their real-only runs differ by float rounding
(0.000-0.017 here) and a direct paired table (``scripts/compare_runs.py``) refuses them; what is paired is each arm's
gain over the real-only run of its own machine, same draw and seed.

    python docs/results/gen128_all/compare_n4.py BASE_64/results.json NEW_128/results.json [N]
"""

from __future__ import annotations

import sys
from pathlib import Path

from monai_siamese.evaluation.report import load_runs, paired_summary

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "scripts"))
from compare_runs import arm_runs  # noqa: E402

METHODS = ("seg_guided_diffusion", "siamese_diffusion", "meddiff_ft")


def gains(table: dict, arm: str, n: int, key: str = "mean") -> dict[tuple, float]:
    """``(draw, seed) -> Dice[key](arm) - Dice[key](real)`` at N = ``n``."""
    runs, real = arm_runs(table, arm, key), arm_runs(table, "real", key)
    return {k[1:]: v - real[k] for k, v in runs.items() if k[0] == n}


def main(base_path: str, new_path: str, n: int = 4) -> str:
    base, new = load_runs(base_path), load_runs(new_path)
    lines = []
    for m in METHODS:
        g64, g128 = gains(base, f"{m}@augmented", n), gains(new, f"{m}@augmented", n)
        keys = sorted(k for k in g128 if k in g64)
        lines += [
            f"## {m}, N = {n}",
            "",
            "| draw, seed | gain over real only, 64 x 64 | 128 x 128 |",
            "| --- | --- | --- |",
            *[f"| {k[0]}, {k[1]} | {g64[k]:+.3f} | {g128[k]:+.3f} |" for k in keys],
            "",
            f"gain over real only, 64 x 64: {paired_summary([g64[k] for k in keys])}",
            f"gain over real only, 128 x 128: {paired_summary([g128[k] for k in keys])}",
            f"gain 128 x 128 - gain 64 x 64: {paired_summary([g128[k] - g64[k] for k in keys])}",
            "CSF gain over real only, 128 x 128: "
            + paired_summary([v for k, v in gains(new, f"{m}@augmented", n, "CSF").items() if k in keys]),
            "",
        ]
    text = "\n".join(lines)
    print(text)
    return text


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], *(int(a) for a in sys.argv[3:4]))
