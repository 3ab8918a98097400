"""scripts/compare_runs.py: the paired table of one arm between two evaluation results, and its refusals."""

from __future__ import annotations

import json

import pytest
from helpers import load_script

ARM = "seg_guided_diffusion@augmented"


def _results(path, real, arm, regime=4, more=()):
    runs = [{"arm": "real", "regime": regime, "draw": d, "seed": s, "dice": {"mean": v}} for (d, s), v in real.items()]
    runs += [{"arm": ARM, "regime": regime, "draw": d, "seed": s, "dice": {"mean": v}} for (d, s), v in arm.items()]
    runs += list(more)
    path.write_text(json.dumps({"runs": runs}))
    return str(path)


def test_paired_table_and_refusals(tmp_path):
    cmp = load_script("compare_runs")
    real = {(0, 0): 0.60, (0, 1): 0.62, (1, 0): 0.70}
    base = _results(tmp_path / "base.json", real, {(0, 0): 0.65, (0, 1): 0.66, (1, 0): 0.69})
    new = _results(tmp_path / "new.json", real, {(0, 0): 0.70, (0, 1): 0.64, (1, 0): 0.74})
    text = cmp.main(["--arm", ARM, "--base", base, "--new", new, "--base_name", "old", "--new_name", "changed"])
    assert "| 4, 0, 1 | 0.620 | 0.660 | 0.640 |" in text
    assert "gain over real only, old: +0.027" in text and "2/3" in text.splitlines()[-3]
    assert "gain over real only, changed: +0.053" in text and text.splitlines()[-2].endswith("3/3")
    assert text.splitlines()[-1].startswith("changed - old: +0.027") and text.splitlines()[-1].endswith("2/3")
    other = _results(tmp_path / "other.json", {**real, (1, 0): 0.71}, {(0, 0): 0.7, (0, 1): 0.6, (1, 0): 0.7})
    with pytest.raises(SystemExit, match="real-only runs differ"):
        cmp.main(["--arm", ARM, "--base", base, "--new", other])
    short = _results(tmp_path / "short.json", real, {(0, 0): 0.65})
    with pytest.raises(SystemExit, match="runs missing"):
        cmp.main(["--arm", ARM, "--base", short, "--new", new])
    with pytest.raises(SystemExit, match="no runs"):
        cmp.main(["--arm", "nothing@here", "--base", base, "--new", new])


def test_regimes_restrict_the_comparison_to_the_runs_both_results_have(tmp_path):
    cmp = load_script("compare_runs")
    real = {(0, 0): 0.80, (0, 1): 0.82}
    base = _results(tmp_path / "base.json", real, {(0, 0): 0.81, (0, 1): 0.80}, regime=8)
    n4 = [{"arm": a, "regime": 4, "draw": 0, "seed": 0, "dice": {"mean": 0.7}} for a in ("real", ARM)]
    new = _results(tmp_path / "new.json", real, {(0, 0): 0.84, (0, 1): 0.83}, regime=8, more=n4)
    with pytest.raises(SystemExit, match="runs missing"):  # N = 4 is in --new only
        cmp.main(["--arm", ARM, "--base", base, "--new", new])
    text = cmp.main(["--arm", ARM, "--base", base, "--new", new, "--regimes", "8"])
    assert "| 8, 0, 0 | 0.800 | 0.810 | 0.840 |" in text and "| 4," not in text
    with pytest.raises(SystemExit, match=r"no runs .* for N in \[16\]"):
        cmp.main(["--arm", ARM, "--base", base, "--new", new, "--regimes", "16"])
