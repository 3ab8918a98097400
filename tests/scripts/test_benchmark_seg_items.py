"""scripts/benchmark_seg_items.py: the segmentation data path with ``reseed`` against ``set_random_state`` gives the
same items and prints its figures (tiny run)."""

from __future__ import annotations

import json
import os

from helpers import load_script


def test_benchmark_seg_items_checks_identity_and_writes_figures(tmp_path, demo_dir, capsys):
    bench = load_script("benchmark_seg_items")
    out = tmp_path / "r.json"
    res = bench.main(
        ["--size", "16", "--items", "3", "--repeats", "3", "--intensity_prob", "0.5", "--out", str(out),
         "--datalist", os.path.join(demo_dir, "datalist.json")]
    )  # fmt: skip
    assert res["identical_items"] is True
    assert res["speedup_cpu"]["n"] == 3 and res["speedup_cpu"]["median"] > 0
    assert set(res["ms_per_item_cpu"]) == {"reseed", "set_random_state"}
    assert json.loads(out.read_text())["repeats"] == 3
    assert "identical items: True" in capsys.readouterr().out
