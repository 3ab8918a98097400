"""scripts/benchmark_adamw.py: the three AdamW implementations over a bundle's network, interleaved, with their
figures (tiny run)."""

from __future__ import annotations

import json

from helpers import load_script

from monai_siamese.engines import fused_adamw_available


def test_benchmark_adamw_times_every_implementation(tmp_path, demo_dir, capsys):
    bench = load_script("benchmark_adamw")
    out = tmp_path / "r.json"
    res = bench.main(["--networks", "seg_guided_diffusion", "--steps", "2", "--repeats", "3", "--out", str(out)])
    net = res["networks"]["seg_guided_diffusion"]
    expected = {"single", "foreach"} | ({"fused"} if fused_adamw_available("cpu") else set())
    assert set(net["ms_per_step_cpu"]) == expected and all(v > 0 for v in net["ms_per_step_cpu"].values())
    assert set(net["speedup_vs_single_cpu"]) == expected - {"single"}
    assert all(r["n"] == 3 for r in net["speedup_vs_single_cpu"].values())
    assert net["parameters"] > 100_000  # the demo.json network, not a stand-in
    assert json.loads(out.read_text())["repeats"] == 3
    assert "per step (CPU clock)" in capsys.readouterr().out
