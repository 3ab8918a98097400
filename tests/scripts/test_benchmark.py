"""Smoke run of ``scripts/benchmark.py`` on tiny settings (in one process), and its summary logic."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "benchmark.py"


@pytest.fixture(scope="module")
def bench():
    pytest.importorskip("diffusers")
    spec = importlib.util.spec_from_file_location("benchmark_script", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["benchmark_script"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_quick_smoke_run_writes_json_and_markdown(bench, tmp_path):
    args = ["--quick", "--device", "cpu", "--resolution", "16", "--batch", "2", "--sample_batch", "2"]
    args += ["--channels", "8", "16", "--steps", "1", "--warmup", "1", "--sample_repeats", "1", "--skip_quality"]
    args += ["--in_process", "--methods", "seg_guided_diffusion", "--out", str(tmp_path)]
    assert bench.main(args) == 0
    result = json.loads(next(tmp_path.glob("benchmark_cpu_*.json")).read_text())
    md = next(tmp_path.glob("benchmark_cpu_*.md")).read_text()
    for m in ("seg_guided_diffusion",):
        for v in ("ours", "reference"):
            tr = result["train"][m][v]
            assert tr["images_per_s"] > 0 and tr["peak_mib"] > 0 and tr["flops_per_step"] > 0
        assert set(result["sample"][m]["ours"]["settings"]) == {f"{n}_{s}" for n, s in bench.SAMPLER_SETTINGS}
        assert result["sample"][m]["reference"]["settings"]["ddim_50"]["images_per_s"] > 0
        assert result["summary"][m]["train_speedup"] > 0
        assert f"| {m} |" in md
    # same architecture and FLOPs for ours and the diffusers reference
    seg = result["train"]["seg_guided_diffusion"]
    assert seg["ours"]["params"] == seg["reference"]["params"]
    assert "--quick" in result["command"] and result["env"]["bf16_peak_tflops"] is None


def test_equal_quality_setting_and_peaks(bench):
    def sample(ips):
        return {"settings": {k: {"images_per_s": v, "steps": 1} for k, v in ips.items()}, "peak_mib": 10.0}

    m = "seg_guided_diffusion"
    result = {
        "config": {"dice_tolerance": 0.01, "methods": [m]},
        "env": {"bf16_peak_tflops": None},
        "train": {
            m: {v: {"images_per_s": 2.0 if v == "ours" else 1.0, "peak_mib": 5.0} for v in ("ours", "reference")}
        },
        "sample": {
            m: {
                "ours": sample({"ddim_50": 1.0, "ddim_10": 5.0, "dpmpp_2m_10": 5.0, "dpmpp_2m_20": 2.5}),
                "reference": sample({"ddim_50": 0.5}),
            }
        },
        "quality": {"dice": {"ddim_50": 0.80, "ddim_10": 0.70, "dpmpp_2m_10": 0.795, "dpmpp_2m_20": 0.81}},
    }
    s = bench.summarize(result)
    assert s[m]["sample_equal_quality_setting"] == "dpmpp_2m_10"  # ddim_10 is faster but loses 0.1 Dice
    assert s[m]["sample_speedup_equal_quality"] == pytest.approx(10.0) and s[m]["train_speedup"] == 2.0
    assert bench.bf16_peak_tflops(torch.device("cpu")) is None
    assert dict(bench.BF16_PEAK_TFLOPS)["H100"] == 989.0 and dict(bench.BF16_PEAK_TFLOPS)["A100"] == 312.0
