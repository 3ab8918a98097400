"""The default mode of ``scripts/benchmark.py``: training and sampling speed of each bundle against the reference
projects' way, peak memory per variant (one process each), FLOPs (and MFU on CUDA), and faithfulness per sampler
setting. Timing runs the variants interleaved in one process; every ratio is the median (min-max) over repeats."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch

from bench.output import fmt, fmt_spread, run_json_worker, table
from bench.speed_sample import sampling_variants
from bench.speed_train import ReferenceLoop, SiameseReferenceLoop, build_ours, speed_overrides, step_flops
from bench.timing import interleave, peak_memory, reset_memory, spread

__all__ = ["FULL", "QUICK", "SIAMESE_PHASES", "speed_config", "summarize", "speed_markdown", "run_speed_mode"]

FULL = {
    "resolution": 256,
    "batch": 16,
    "channels": None,  # the bundle's train.json (reference channels)
    "steps": 5,
    "sample_batch": 16,
    "quality_masks": 64,
}
QUICK = {
    "resolution": 32,
    "batch": 4,
    "channels": [16, 16, 32, 32, 64, 64],
    "attention": [False, False, False, False, True, False],
    "num_res_blocks": 1,
    "head_channels": 32,
    "norm_groups": 16,
    "hint_channels": [16],
    "steps": 4,
    "sample_batch": 8,
    "quality_masks": 24,
}
#: Siamese-Diffusion phases: name -> (overrides, online augmentation on, w_i of the reference); the training-time
#: average weighs early 1/3 and late 2/3 (augmentation starts after a third of training)
SIAMESE_PHASES = {"early": ({"oa_start": 1.0}, False, 0.1), "late": ({"oa_start": 0.0}, True, 0.5)}
EARLY_FRACTION = 1.0 / 3.0


def speed_config(args: Any, device: torch.device) -> dict[str, Any]:
    """The preset (``--quick`` or full) with the command-line overrides."""
    cfg = dict(QUICK if args.quick else FULL)
    for k in ("resolution", "batch", "sample_batch", "channels", "steps", "quality_masks"):
        if getattr(args, k, None) is not None:
            cfg[k] = getattr(args, k)
    if cfg.get("channels"):
        n = len(cfg["channels"])
        cfg.setdefault("attention", [False] * n)
        if len(cfg["attention"]) != n:
            cfg["attention"] = [False] * max(n - 2, 0) + [True, False][:n]
        cfg.setdefault("num_res_blocks", 1)
        cfg["norm_groups"] = min(cfg.get("norm_groups", 16), min(cfg["channels"]))
        cfg["head_channels"] = min(cfg.get("head_channels", 32), min(cfg["channels"]))
        cfg.setdefault("hint_channels", [16])
    out = Path(args.out).resolve()
    cfg.update(
        {
            "device": str(device),
            "quick": bool(args.quick),
            "methods": list(args.methods),
            "amp": not args.no_amp,
            "channels_last": bool(args.channels_last),
            "compile": bool(args.compile),
            "repeats": int(args.repeats),
            "dice_tolerance": args.dice_tolerance,
            "generator": args.generator,
            "segmenter": args.segmenter,
            "quality_size": args.quality_size or (32 if args.quick else 64),
            "generator_iterations": args.generator_iterations or (600 if args.quick else 1200),
            "segmenter_iterations": args.segmenter_iterations or (150 if args.quick else 600),
            "work_dir": str(out / "work"),
            "in_process": bool(args.in_process),
        }
    )
    return cfg


def _phases(method: str) -> dict[str, tuple[dict, bool, float]]:
    return SIAMESE_PHASES if method == "siamese_diffusion" else {"": ({}, False, 0.0)}


def _reference(cfg: dict, method: str, device: torch.device, work: Path, phase: tuple) -> Any:
    from bench.bundle_setup import bundle_parser

    over = {**speed_overrides(cfg, method, device), **phase[0]}
    parser = bundle_parser(method, ("train.json",), over, work, device, cfg["resolution"], cfg["batch"])
    if method == "siamese_diffusion":
        return SiameseReferenceLoop(parser, cfg["steps"], device, phase[2], phase[1])
    return ReferenceLoop(parser, method, cfg["resolution"], cfg["steps"], device)


def train_speed(cfg: dict, method: str, device: torch.device, log=print) -> dict[str, Any]:
    """Interleaved ours-vs-reference training throughput (per Siamese phase), FLOPs per step."""
    work = Path(cfg["work_dir"]) / f"train_{method}"
    out: dict[str, Any] = {"phases": {}}
    per_repeat: dict[str, list[list[float]]] = {"ours": [], "reference": []}
    for name, phase in _phases(method).items():
        parser, ours = build_ours(cfg, method, device, str(work / f"ours{name}"), phase[0])
        ref = _reference(cfg, method, device, work / f"ref{name}", phase)
        log(f"train {method} {name}: {cfg['steps']} iterations per block, {cfg['repeats']} repeats")
        inter = interleave({"ours": ours, "reference": ref}, cfg["repeats"], warmup=1, log=log)
        ours.close()
        weight = (EARLY_FRACTION if name == "early" else 1 - EARLY_FRACTION) if name else 1.0
        for v in per_repeat:
            per_repeat[v].append([weight * b.wall_s / b.items for b in inter.blocks[v]])
        amp = bool(cfg["amp"]) and device.type == "cuda"
        ref_net = getattr(ref, "model", None) or getattr(ref, "net")
        out["params"] = {
            "ours": sum(p.numel() for p in parser.get_parsed_content("network").parameters()),
            "reference": sum(p.numel() for p in ref_net.parameters()),
        }
        out["phases"][name or "all"] = {
            "ratio_wall": inter.ratio("ours", "reference", "wall"),
            "ratio_cpu": inter.ratio("ours", "reference", "cpu"),
            **inter.summary(),
            "flops_per_step": {"ours": step_flops(parser, method, device, amp, phase[1]), "reference": ref.flops()},
        }
    # seconds per image per repeat, summed over the phases' weights -> images/s and ratios per repeat
    sec = {v: [sum(x) for x in zip(*per_repeat[v])] for v in per_repeat}
    out["images_per_s"] = {v: spread([1.0 / s for s in sec[v]]) for v in sec}
    out["ratio"] = spread([r / o for o, r in zip(sec["ours"], sec["reference"])])
    last = list(out["phases"].values())[-1]
    out["flops_per_step"] = last["flops_per_step"]
    return out


def sample_speed(cfg: dict, method: str, device: torch.device, log=print) -> dict[str, Any]:
    """Interleaved sampling runs: every setting of ours and the reference DDIM 50, ratios per repeat."""
    from bench.bundle_setup import bundle_parser

    over = speed_overrides(cfg, method, device)
    work = Path(cfg["work_dir"]) / f"sample_{method}"
    parser = bundle_parser(method, ("train.json",), over, work, device, cfg["resolution"], cfg["batch"])
    variants, steps, flops = sampling_variants(parser, method, cfg, device)
    log(f"sample {method}: {len(variants)} variants, {cfg['repeats']} repeats")
    with torch.no_grad():
        inter = interleave(variants, cfg["repeats"], warmup=1, log=log)
    settings = {}
    for key in variants:
        if key.startswith("ours "):
            settings[key[5:]] = {
                "steps": steps[key],
                "images_per_s": inter.rate(key, "wall"),
                "ratio_vs_reference_ddim50": inter.ratio(key, "reference ddim_50", "wall"),
                "ratio_vs_reference_ddim50_cpu": inter.ratio(key, "reference ddim_50", "cpu"),
            }
    return {"settings": settings, "reference_ddim50": inter.rate("reference ddim_50"), "flops_per_eval": flops}


def memory_worker(wcfg: dict[str, Any]) -> dict[str, Any]:
    """Peak memory of one variant in this process: a few training iterations or one sampling run."""
    cfg, method, variant, kind = wcfg["cfg"], wcfg["method"], wcfg["variant"], wcfg["kind"]
    device = torch.device(cfg["device"])
    work = Path(cfg["work_dir"]) / f"mem_{kind}_{method}_{variant}"
    phase = list(_phases(method).values())[-1]
    if kind == "train":
        if variant == "ours":
            _, runner = build_ours(cfg, method, device, str(work), phase[0])
        else:
            runner = _reference(cfg, method, device, work, phase)
        base = reset_memory(device)
        runner()
        runner()
        if variant == "ours":
            runner.close()
    else:
        from bench.bundle_setup import bundle_parser

        over = speed_overrides(cfg, method, device)
        parser = bundle_parser(method, ("train.json",), over, work, device, cfg["resolution"], cfg["batch"])
        variants, _, _ = sampling_variants(parser, method, cfg, device)
        base = reset_memory(device)
        with torch.no_grad():
            variants["ours ddim_50" if variant == "ours" else "reference ddim_50"]()
    return {"base_mib": base, **peak_memory(device)}


def run_worker_here(kind: str, wcfg: dict[str, Any]) -> dict[str, Any]:
    """Entry of ``--worker``: ``memory``, ``quality`` or ``smoke`` (``--smoke_full``)."""
    if kind == "quality":
        from bench.faithfulness import quality_worker

        return quality_worker(wcfg)
    if kind == "smoke":
        from bench.smoke_full import smoke_worker

        return smoke_worker(wcfg)
    return memory_worker(wcfg)


def _worker(cfg: dict, kind: str, payload: dict) -> dict:
    if cfg["in_process"]:
        return run_worker_here(kind, payload)
    script = str(Path(__file__).resolve().parents[1] / "benchmark.py")
    return run_json_worker([sys.executable, script, "--worker", kind, "--worker_cfg", json.dumps(payload)])


def summarize(result: dict[str, Any]) -> dict[str, Any]:
    """Per method: training and sampling ratios (median, min, max), memory ratios, and the fastest sampler setting
    within ``dice_tolerance`` of DDIM 50's faithfulness ("equal quality")."""
    cfg = result["config"]
    dice = (result.get("quality") or {}).get("dice", {})
    tol = cfg["dice_tolerance"]
    equal = [k for k, v in dice.items() if k != "real_images" and "ddim_50" in dice and v >= dice["ddim_50"] - tol]
    out: dict[str, Any] = {"equal_quality_settings": equal}
    for m in cfg["methods"]:
        tr, sa = result["train"][m], result["sample"][m]
        settings = sa["settings"]
        fastest = max(equal or ["ddim_50"], key=lambda k: settings[k]["images_per_s"]["median"])
        s: dict[str, Any] = {
            "train_speedup": tr["ratio"],
            "sample_speedup_ddim50": settings["ddim_50"]["ratio_vs_reference_ddim50"],
            "sample_equal_quality_setting": fastest,
            "sample_speedup_equal_quality": settings[fastest]["ratio_vs_reference_ddim50"],
        }
        mem = result.get("memory", {}).get(m)
        if mem:
            s["train_memory_ratio"] = mem["train"]["ours"]["peak_mib"] / mem["train"]["reference"]["peak_mib"]
            s["sample_memory_ratio"] = mem["sample"]["ours"]["peak_mib"] / mem["sample"]["reference"]["peak_mib"]
        peak = result["env"].get("bf16_peak_tflops")
        if peak:
            fl = tr["flops_per_step"]
            s["train_mfu"] = {
                v: fl[v] * tr["images_per_s"][v]["median"] / cfg["batch"] / (peak * 1e12) for v in ("ours", "reference")
            }
        out[m] = s
    return out


def speed_markdown(result: dict[str, Any]) -> str:
    """Tables of the speed mode."""
    cfg, summ = result["config"], result["summary"]
    lines = [
        f"Settings: {cfg['resolution']}x{cfg['resolution']}, train batch {cfg['batch']}, sample batch "
        f"{cfg['sample_batch']}, channels {cfg['channels'] or 'train.json (reference)'}; ours: the bundle's trainer "
        f"(bf16 autocast: {cfg['amp'] and cfg['device'].startswith('cuda')}, channels_last {cfg['channels_last']}, compile {cfg['compile']}); "
        f"reference fp32. Median (min-max) over {cfg['repeats']} interleaved repeats of {cfg['steps']} training "
        "iterations / one sampling run per variant.",
        "",
    ]
    rows = []
    for m in cfg["methods"]:
        s, tr, sa = summ[m], result["train"][m], result["sample"][m]
        fl = tr["flops_per_step"]
        rows.append(
            [
                m,
                fmt_spread(tr["images_per_s"]["ours"]),
                fmt_spread(tr["images_per_s"]["reference"]),
                f"**{fmt_spread(s['train_speedup'])}**",
                fmt(s.get("train_memory_ratio")),
                fmt_spread(sa["settings"]["ddim_50"]["ratio_vs_reference_ddim50"]),
                s["sample_equal_quality_setting"],
                f"**{fmt_spread(s['sample_speedup_equal_quality'])}**",
                fmt(s.get("sample_memory_ratio")),
                f"{fmt(fl['ours'] / 1e9, 3)} / {fmt(fl['reference'] / 1e9, 3)}",
            ]
            + (
                [f"{fmt(100 * s['train_mfu']['ours'], 1)}% / {fmt(100 * s['train_mfu']['reference'], 1)}%"]
                if "train_mfu" in s
                else []
            )
        )
    header = [
        "method",
        "train img/s ours",
        "train img/s ref",
        "train ratio",
        "train mem ratio",
        "sample ratio DDIM50",
        "equal-quality setting",
        "sample ratio equal quality",
        "sample mem ratio",
        "GFLOP/train step ours / ref",
    ] + (["MFU ours / ref"] if any("train_mfu" in summ[m] for m in cfg["methods"]) else [])
    lines += table(header, rows)
    lines += ["", "Ratios are ours / reference (throughput: higher is better; memory: lower is better).", ""]
    srows = []
    for m in cfg["methods"]:
        for k, v in result["sample"][m]["settings"].items():
            srows.append([m, k, v["steps"], fmt_spread(v["images_per_s"]), fmt_spread(v["ratio_vs_reference_ddim50"])])
    lines += table(["method", "setting", "steps", "img/s", "ratio vs ref DDIM50"], srows)
    q = result.get("quality")
    if q:
        lines += [
            "",
            f"Faithfulness (seg_guided_diffusion, {q['masks']} {q['split']} masks at {q['size']}x{q['size']}; "
            f"generator: {q['generator']}; segmenter: {q['segmenter']}): mean foreground Dice. Equal quality = within "
            f"{cfg['dice_tolerance']} of DDIM 50.",
            "",
        ]
        qrows = []
        for k, v in q["dice"].items():
            pc = q["dice_per_class"].get(k, [float("nan")] * 3)
            qrows.append([k, fmt(v, 3)] + [fmt(x, 3) for x in pc])
        lines += table(["sampler setting", "Dice", "CSF", "GM", "WM"], qrows)
    return "\n".join(lines) + "\n"


def run_speed_mode(args: Any, device: torch.device, argv: list[str] | None) -> tuple[dict, str]:
    """Run the speed mode; returns its result and Markdown."""
    cfg = speed_config(args, device)
    result: dict[str, Any] = {"config": cfg, "train": {}, "sample": {}, "memory": {}}
    from bench.timing import environment

    result["env"] = environment(device)
    for m in cfg["methods"]:
        result["train"][m] = train_speed(cfg, m, device)
        result["sample"][m] = sample_speed(cfg, m, device)
        print(f"train {m}: ours/reference {fmt_spread(result['train'][m]['ratio'])}", flush=True)
        if not cfg["in_process"]:
            result["memory"][m] = {
                kind: {
                    v: _worker(cfg, "memory", {"cfg": cfg, "method": m, "variant": v, "kind": kind})
                    for v in ("ours", "reference")
                }
                for kind in ("train", "sample")
            }
    if not args.skip_quality:
        try:
            result["quality"] = _worker(cfg, "quality", cfg)
        except RuntimeError as e:  # keep the speed results
            result["quality_error"] = str(e)[-3000:]
    result["summary"] = summarize(result)
    return result, speed_markdown(result)
