"""Smoke runs of the benchmark scripts and their modes on tiny settings (in one process), and their summary logic."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import load_script

TINY_NET = {"channels": [8, 16], "attention_levels": [False, False], "num_res_blocks": 1}


@pytest.fixture(scope="module")
def bench():
    pytest.importorskip("diffusers")
    return load_script("benchmark")


def _tiny_net(method: str) -> dict:
    from bench.bundle_setup import network_overrides

    return network_overrides(method, **{**TINY_NET, "num_head_channels": 8, "norm_num_groups": 8})


def test_spread_and_interleaved_ratios(bench):
    from bench.timing import Block, interleave, spread

    assert spread([3.0, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0, "n": 3}
    order = []
    speeds = {"a": iter([10, 20, 30, 40]), "b": iter([5, 10, 10, 20])}

    def variant(name):
        def run():
            order.append(name)
            return Block(items=next(speeds[name]), wall_s=1.0, cpu_s=2.0)

        return run

    inter = interleave({"a": variant("a"), "b": variant("b")}, repeats=3, warmup=1)
    assert order == ["a", "b"] * 4  # warm-up round, then A B A B A B
    assert inter.ratio("a", "b")["median"] == 2.0 and inter.ratio("a", "b")["min"] == 2.0
    assert inter.rate("a", "cpu")["median"] == 15.0
    ci = inter.ratio_interval("a", "b")  # ratios 2, 3, 2: geometric mean 12 ** (1/3), a t-interval around it
    assert ci["n"] == 3 and abs(ci["geomean"] - 12 ** (1 / 3)) < 1e-9 and ci["low"] < ci["geomean"] < ci["high"]
    assert ci["low"] < 2.0 and ci["high"] > 3.0


def test_interleave_common_random_numbers(bench):
    """With a seed, every variant's k-th block starts from the same torch seed (through the variant's own
    ``manual_seed`` where it has one), so variants drawing alike draw the same numbers in a round."""
    from bench.timing import Block, interleave

    draws = {"a": [], "b": [], "c": []}
    seeds = []

    def variant(name):
        def run():
            draws[name].append(torch.randint(0, 1000, (4,)).tolist())
            return Block(items=1, wall_s=1.0, cpu_s=1.0)

        return run

    class OwnSeed:
        def manual_seed(self, s):
            seeds.append(s)

        def __call__(self):
            draws["c"].append(None)
            return Block(items=1, wall_s=1.0, cpu_s=1.0)

    interleave({"a": variant("a"), "b": variant("b"), "c": OwnSeed()}, repeats=3, warmup=1, seed=7)
    assert draws["a"] == draws["b"] and len(draws["a"]) == 4
    assert len({tuple(d) for d in draws["a"]}) == 4  # a new seed each round
    assert seeds == [7, 8, 9, 10] and len(draws["c"]) == 4
    interleave({"a": variant("a"), "b": variant("b")}, repeats=3, warmup=1)  # no seed: independent draws
    assert draws["a"][4:] != draws["b"][4:]


def test_quick_speed_mode_writes_json_and_markdown(bench, tmp_path, demo_dir):
    args = ["--quick", "--device", "cpu", "--resolution", "16", "--batch", "2", "--sample_batch", "2"]
    args += ["--channels", "8", "16", "--steps", "1", "--repeats", "1", "--skip_quality"]
    args += ["--in_process", "--methods", "seg_guided_diffusion", "--out", str(tmp_path)]
    assert bench.main(args) == 0
    result = json.loads(next(tmp_path.glob("benchmark_cpu_*.json")).read_text())
    md = next(tmp_path.glob("benchmark_cpu_*.md")).read_text()
    m = "seg_guided_diffusion"
    tr = result["train"][m]
    assert tr["images_per_s"]["ours"]["median"] > 0 and tr["ratio"]["n"] == 1
    assert tr["flops_per_step"]["ours"] > 0 and tr["flops_per_step"]["reference"] > 0
    # ours is the bundle's network; the diffusers reference has the same architecture
    assert tr["params"]["ours"] == tr["params"]["reference"]
    from bench.speed_sample import SAMPLER_SETTINGS

    assert set(result["sample"][m]["settings"]) == {f"{n}_{s}" for n, s in SAMPLER_SETTINGS}
    assert result["summary"][m]["train_speedup"]["median"] > 0
    assert f"| {m} |" in md and "--quick" in result["command"] and result["env"]["bf16_peak_tflops"] is None


def test_equal_quality_setting(bench):
    from bench.speed import summarize

    def s(v):
        return {"median": v, "min": v, "max": v, "n": 1}

    def sample(ips):
        return {
            "settings": {
                k: {"images_per_s": s(v), "ratio_vs_reference_ddim50": s(v / 0.5), "steps": 1} for k, v in ips.items()
            }
        }

    m = "seg_guided_diffusion"
    result = {
        "config": {"dice_tolerance": 0.01, "methods": [m], "batch": 2},
        "env": {"bf16_peak_tflops": None},
        "train": {m: {"ratio": s(2.0), "images_per_s": {"ours": s(2.0), "reference": s(1.0)}}},
        "sample": {m: sample({"ddim_50": 1.0, "ddim_10": 5.0, "dpmpp_2m_10": 5.0, "dpmpp_2m_20": 2.5})},
        "quality": {"dice": {"ddim_50": 0.80, "ddim_10": 0.70, "dpmpp_2m_10": 0.795, "dpmpp_2m_20": 0.81}},
    }
    out = summarize(result)
    assert out[m]["sample_equal_quality_setting"] == "dpmpp_2m_10"  # ddim_10 is faster but loses 0.1 Dice
    assert out[m]["sample_speedup_equal_quality"]["median"] == pytest.approx(10.0)
    from bench.timing import BF16_PEAK_TFLOPS, bf16_peak_tflops

    assert bf16_peak_tflops(torch.device("cpu")) is None and dict(BF16_PEAK_TFLOPS)["H100"] == 989.0


def test_overhead_mode(bench, tmp_path, demo_dir):
    from bench.overhead import measure_overhead, overhead_markdown

    res = measure_overhead(
        ["seg_guided_diffusion"],
        [16],
        batch=2,
        block=1,
        repeats=1,
        work_dir=tmp_path,
        overrides=_tiny_net("seg_guided_diffusion"),
        log=lambda *_: None,
    )
    r = res["seg_guided_diffusion@16"]
    assert r["ratio_cpu"]["median"] > 0 and r["bundle"]["blocks"][0]["items"] == 2
    assert r["ratio_same_algorithm_cpu"]["median"] > 0 and r["plain_same_algorithm"]["blocks"][0]["items"] == 2
    # the plain loop in a process of its own (spawned, allocator defaults) ran its blocks there
    assert r["ratio_own_process_cpu"]["median"] > 0 and r["plain_own_process"]["blocks"][0]["items"] == 2
    assert r["ratio_own_process_cpu_interval"]["n"] == 1 and r["ratio_cpu_interval"]["geomean"] > 0
    assert "seg_guided_diffusion" in "\n".join(overhead_markdown(res))


def test_own_process_plain_loop_reports_its_failure(bench, tmp_path, demo_dir):
    from bench.overhead import OwnProcessPlainLoop

    with pytest.raises(RuntimeError, match="own process failed"):
        OwnProcessPlainLoop("seg_guided_diffusion", {"network_def#channels": "not a list"}, tmp_path, "cpu", 16, 2, 1)


def test_overhead_mode_compiled(bench, tmp_path, demo_dir):
    """``--overhead --compile``: the compiled bundle against the eager bundle and a compiled plain loop, with the
    compile time and its break-even (dynamo with the ``eager`` backend here: no C++ compile in the tests)."""
    from bench.overhead import compile_markdown, measure_overhead

    over = {**_tiny_net("seg_guided_diffusion"), "compile_kwargs": {"backend": "eager"}}
    res = measure_overhead(
        ["seg_guided_diffusion"], [16], batch=2, block=1, repeats=1, work_dir=tmp_path, overrides=over, compile=True,
        log=lambda *_: None,
    )  # fmt: skip
    r = res["seg_guided_diffusion@16"]
    assert {"bundle", "bundle_eager", "plain_compiled"} <= set(r) and r["bundle_eager"]["blocks"][0]["items"] == 2
    assert set(r["first_block_s"]) == {"bundle", "bundle_eager", "plain_compiled"}
    assert r["ratio_vs_plain_compiled_cpu"]["median"] > 0 and r["ratio_compiled_vs_eager_bundle_cpu"]["median"] > 0
    assert r["compile_s"] == pytest.approx(r["first_block_s"]["bundle"] - r["first_block_s"]["bundle_eager"])
    gain = 2 / r["bundle_eager"]["images_per_s"]["median"] - 2 / r["bundle"]["images_per_s"]["median"]  # s/iteration
    if gain > 0:
        assert r["break_even_iterations"] == pytest.approx(r["compile_s"] / gain)
    else:
        assert r["break_even_iterations"] is None
    md = "\n".join(compile_markdown(res))
    assert "seg_guided_diffusion" in md and "break-even" in md


def test_quality_per_compute_tiny(bench, tmp_path, demo_dir):
    out, work = tmp_path / "out", tmp_path / "work"
    args = ["--quality_per_compute", "--qpc_tiny", "--resolution", "32", "--budgets", "0.01", "--judge_iterations"]
    args += ["2", "--judge_size", "32", "--judge_channels", "8", "16", "--judge_res_units", "0", "--val_seeds", "1"]
    args += ["--train_masks", "1", "--methods", "seg_guided_diffusion", "--objectives", "ddpm_v", "--sampling_steps"]
    args += ["1", "2", "--out", str(out), "--work", str(work)]
    assert bench.main(args) == 0
    result = json.loads((out / "quality_per_compute.json").read_text())
    run = result["runs"]["seg_guided_diffusion__ddpm_v"]
    ev = run["evals"][0]
    assert set(ev["settings"]) == {"dpmpp_2m_1", "dpmpp_2m_2", "ddim_2"}
    assert ev["samples"] == 7 and ev["val_samples"] == 6 and ev["iteration"] >= 1
    for s in ev["settings"].values():
        assert 0 <= s["faithfulness_val"] <= 1 and s["fid"] >= 0
    assert (out / "quality_vs_training_cpu.png").is_file() and (out / "quality_vs_sampling_steps.png").is_file()
    assert "Mean Dice on the demo test slab" in (out / "quality_per_compute.md").read_text()
    assert bench.main(args) == 0  # a rerun reads the cached steps


def test_budget_export_handler(tmp_path):
    from ignite.engine import Engine

    from bench.qpc_train import BudgetExportHandler

    net = torch.nn.Linear(2, 2)
    h = BudgetExportHandler(net, [0.0, 1e9], tmp_path, {"method": "x"})
    engine = Engine(lambda e, b: None)
    h.attach(engine)
    engine.run([0] * 3, max_epochs=1)
    assert [e["budget_s"] for e in h.exports] == [0.0, 1e9]  # the second budget gets the final weights
    assert h.exports[0]["iteration"] == 1 and h.exports[1]["iteration"] == 3
    assert (tmp_path / "cpu_0.safetensors").is_file()


def test_smoke_full_worker(bench, tmp_path, demo_dir):
    from bench.smoke_full import smoke_worker

    over = {"spatial_size": [16, 16], **_tiny_net("siamese_diffusion"), "hint_channels": [8]}
    r = smoke_worker(
        {"method": "siamese_diffusion", "device": "cpu", "iterations": 2, "work_dir": str(tmp_path), "overrides": over}
    )
    assert r["iterations"] == 2 and r["s_per_iteration_wall"] > 0 and r["flops_per_step"] > 0 and r["peak_mib"] > 0


def test_siamese_step_script(demo_dir, capsys):
    mod = load_script("benchmark_siamese_step")
    args = ["--device", "cpu", "--size", "16", "--batch", "2", "--channels", "8", "16", "--steps", "1"]
    assert mod.main(args + ["--repeats", "1", "--no_memory"]) == 0
    out = capsys.readouterr().out
    assert "early: ours" in out and "late: ours" in out and "training (0.33 early" in out
