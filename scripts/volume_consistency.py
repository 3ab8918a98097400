"""Slice consistency of whole synthetic volumes: independent vs consistent (2.5D) generation on the MNI152 demo.

Trains two small concat-conditioned denoisers (SegGuidedDiff conditioning, arXiv 2402.05210) with the same budget on
the axial slices of the 3D demo volume: ``independent`` (condition = the slice's mask, today's model) and
``consistent`` (mask + neighbour masks + previous real slice, :class:`~monai_siamese.transforms.ContextConditiond`).
Then generates a volume from the demo's label volume with each (per-slice noise and shared noise), measures the
adjacent-slice similarity (NCC / SSIM in the foreground) of real and synthetic volumes and writes the orthogonal
reformat figure. Training runs on MONAI's ``SupervisedTrainer`` with the bundles' prepare-batch and inferer.

Example (what ``docs/results/volume`` holds)::

    OMP_NUM_THREADS=2 python scripts/volume_consistency.py --output docs/results/volume --work /tmp/volume_work
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from monai.data import DataLoader  # noqa: E402
from monai.engines import SupervisedTrainer  # noqa: E402
from monai.inferers import DiffusionInferer  # noqa: E402
from monai.networks.nets import DiffusionModelUNet  # noqa: E402
from monai.networks.schedulers import DDPMScheduler  # noqa: E402
from monai.optimizers import WarmupCosineSchedule  # noqa: E402
from monai.transforms import Resize  # noqa: E402
from monai.utils import set_determinism  # noqa: E402

from monai_siamese.data import (  # noqa: E402
    SliceDataset,
    ensure_demo_volume,
    fit_slice_transform,
    load_datalist,
    pair_load_transform,
)
from monai_siamese.data.reformat import to_ras  # noqa: E402
from monai_siamese.diffusion import make_scheduler  # noqa: E402
from monai_siamese.engines import ConditionalDiffusionPrepareBatch  # noqa: E402
from monai_siamese.inferers import ConditionalSampler, VolumeGenerator  # noqa: E402
from monai_siamese.networks import ConcatConditionedUNet  # noqa: E402
from monai_siamese.networks.weights import load_weights, save_weights  # noqa: E402
from monai_siamese.quality import adjacent_slice_similarity, reformat_figure  # noqa: E402
from monai_siamese.transforms import ContextConditiond, context_channels  # noqa: E402
from monai_siamese.utils import atomic_write_json, atomic_write_text, versions  # noqa: E402

logger = logging.getLogger("volume_consistency")
NUM_CLASSES = 4


def network(args: argparse.Namespace, cond_channels: int) -> DiffusionModelUNet:
    return DiffusionModelUNet(
        spatial_dims=2,
        in_channels=1 + cond_channels,
        out_channels=1,
        channels=tuple(args.channels),
        attention_levels=(False,) * len(args.channels),
        num_res_blocks=1,
        norm_num_groups=8,
    )


def train(args: argparse.Namespace, entries: list[dict], mode: str, path: Path) -> tuple[DiffusionModelUNet, dict]:
    """Train (or load) the ``mode`` model; returns it and its training stats."""
    k = args.context_slices if mode == "consistent" else 0
    cond_channels = context_channels(NUM_CLASSES, k, previous_image=mode == "consistent")
    net = network(args, cond_channels)
    stats_path = path.with_suffix(".json")
    if path.is_file() and stats_path.is_file():
        logger.info(f"{mode}: loading {path}")
        return load_weights(net, str(path)).to(args.device), json.loads(stats_path.read_text())
    set_determinism(seed=args.seed)
    transform = ContextConditiond(
        "label",
        num_classes=NUM_CLASSES,
        context_slices=k,
        previous_image=mode == "consistent",
        previous_dropout_prob=args.previous_dropout if mode == "consistent" else 0.0,
        previous_noise_std=args.previous_noise if mode == "consistent" else 0.0,
    )
    ds = SliceDataset(
        entries,
        pair_load_transform(NUM_CLASSES, preset="mr"),
        axis=2,
        min_foreground=1,
        slice_transform=fit_slice_transform(args.size),
        transform=transform,
        context_slices=k,
        previous_image=mode == "consistent",
        progress=False,
    )
    loader = DataLoader(ds, batch_size=args.batch_size, shuffle=True, drop_last=True, num_workers=0)
    scheduler = DDPMScheduler(num_train_timesteps=1000, schedule="linear_beta", prediction_type=args.prediction_type)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=0.01)
    lr_sched = WarmupCosineSchedule(opt, warmup_steps=min(50, args.iterations // 10), t_total=args.iterations)
    epoch_length = len(loader)
    losses: list[float] = []

    def on_iteration(engine: Any) -> None:
        lr_sched.step()
        losses.append(float(engine.state.output["loss"]))
        if engine.state.iteration % 100 == 0:
            logger.info(f"{mode}: iteration {engine.state.iteration}, loss {np.mean(losses[-100:]):.4f}")
        if engine.state.iteration >= args.iterations:
            engine.terminate()

    net = net.to(args.device)
    trainer = SupervisedTrainer(
        device=torch.device(args.device),
        max_epochs=-(-args.iterations // epoch_length),
        train_data_loader=loader,
        network=net,
        optimizer=opt,
        loss_function=torch.nn.MSELoss(),
        inferer=DiffusionInferer(scheduler),
        prepare_batch=ConditionalDiffusionPrepareBatch(
            num_train_timesteps=1000,
            condition_name="cond",
            mode="concat",
            prediction_type=args.prediction_type,
            scheduler=scheduler,
        ),
        decollate=False,
    )
    from ignite.engine import Events
    from ignite.handlers import EMAHandler

    trainer.add_event_handler(Events.ITERATION_COMPLETED, on_iteration)
    ema = EMAHandler(net, momentum=args.ema_momentum) if args.ema_momentum > 0 else None
    if ema is not None:
        ema.attach(trainer, name="ema_momentum", event=Events.ITERATION_COMPLETED)
    t0, c0 = time.time(), time.process_time()
    trainer.run()
    stats = {
        "mode": mode,
        "slices": len(ds),
        "iterations": len(losses),
        "batch_size": args.batch_size,
        "condition_channels": cond_channels,
        "loss_last_100": float(np.mean(losses[-100:])),
        "wall_s": round(time.time() - t0, 1),
        "cpu_s": round(time.process_time() - c0, 1),
    }
    if ema is not None:  # sample with the EMA weights, as the bundles do
        net = ema.ema_model
    save_weights(net, str(path))
    atomic_write_json(stats_path, stats)
    logger.info(f"{mode}: trained {stats}")
    return net, stats


def shrink_png(path: Path) -> None:
    """Re-save a figure with a 256-colour palette (grey tiles + 4 label colours: no visible loss, a third the size)."""
    from PIL import Image

    img = Image.open(path).convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT)
    tmp = path.with_name(f".{path.name}.tmp.png")
    img.save(tmp, optimize=True)
    os.replace(tmp, path)


def roundtrip(image: np.ndarray, size: int) -> np.ndarray:
    """The real volume's axial slices fitted to the model size and back (what the model's resolution allows)."""
    fit = fit_slice_transform(size)
    h, w, n = image.shape
    slices = torch.from_numpy(np.moveaxis(image, 2, 0).copy())  # (n, h, w) as channels
    small = torch.as_tensor(fit({"image": slices})["image"])
    ones = torch.as_tensor(fit({"image": torch.ones(1, h, w)})["image"][0]) > 0
    rows, cols = torch.nonzero(ones.any(1)).flatten(), torch.nonzero(ones.any(0)).flatten()
    crop = small[:, rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    back = Resize((h, w), mode="bilinear", anti_aliasing=True)(crop)
    return np.moveaxis(torch.as_tensor(back).numpy(), 0, 2)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--output", default="docs/results/volume", help="results folder (JSON, Markdown, PNG)")
    p.add_argument("--work", default="/tmp/volume_consistency", help="scratch folder (demo, models, volumes)")
    p.add_argument("--size", type=int, default=64, help="model slice size")
    p.add_argument("--channels", type=int, nargs="+", default=[16, 32, 64], help="DiffusionModelUNet channels")
    p.add_argument("--iterations", type=int, default=600, help="training iterations per model (same budget)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--context-slices", type=int, default=1, help="neighbour masks per side (consistent model)")
    p.add_argument("--previous-dropout", type=float, default=0.15, help="previous-image dropout (consistent)")
    p.add_argument("--previous-noise", type=float, default=0.05, help="previous-image noise std (consistent)")
    p.add_argument("--prediction-type", default="sample", choices=["epsilon", "v_prediction", "sample"])
    p.add_argument("--ema-momentum", type=float, default=0.0, help="EMA of the weights (ignite momentum; 0: off)")
    p.add_argument("--steps", type=int, default=10, help="DDIM sampling steps (eta 0)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="torch device (cuda for a bundle-scale run)")
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    out, work = Path(args.output), Path(args.work)
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    c_start, t_start = time.process_time(), time.time()

    root = ensure_demo_volume(work / "demo_volume")
    entries = load_datalist(f"{root}/datalist.json", "training")
    (pair,) = entries
    # everything trained / generated goes to a folder named after the settings, so a rerun with other settings
    # never picks up stale models or volumes (and the same settings resume)
    keyed = {k: v for k, v in sorted(vars(args).items()) if k not in ("output", "work", "threads", "device")}
    run_dir = work / ("run_" + hashlib.sha1(json.dumps(keyed).encode()).hexdigest()[:10])
    run_dir.mkdir(parents=True, exist_ok=True)
    models = {m: train(args, entries, m, run_dir / f"model_{m}.safetensors") for m in ("independent", "consistent")}

    runs = {
        "independent": ("independent", "per_slice"),
        "independent_shared_noise": ("independent", "shared"),
        "consistent": ("consistent", "per_slice"),
        "consistent_shared_noise": ("consistent", "shared"),
    }
    sampler = ConditionalSampler(
        make_scheduler("ddim", prediction_type=args.prediction_type), num_inference_steps=args.steps, eta=0.0
    )
    volumes: dict[str, Path] = {}
    gen_stats: dict[str, dict] = {}
    for name, (mode, noise) in runs.items():
        net = models[mode][0].eval()
        c0, t0 = time.process_time(), time.time()
        gen = VolumeGenerator(
            ConcatConditionedUNet(net),
            sampler,
            [pair],
            run_dir / "synthetic" / name,
            num_classes=NUM_CLASSES,
            spatial_size=args.size,
            preset="mr",
            slice_axis=2,
            mode=mode,
            context_slices=args.context_slices if mode == "consistent" else 0,
            noise=noise,
            empty_slices="fill",
            seed=args.seed,
            batch_size=32,
            device=args.device,
            method=f"seg_guided_diffusion/{name}",
        )
        res = gen.run()
        (entry,) = json.loads(Path(res["datalist"]).read_text())["training"]
        volumes[name] = run_dir / "synthetic" / name / entry["image"]
        stats_file = run_dir / "synthetic" / name / "generation_stats.json"
        if res["generated"] or not stats_file.is_file():  # a resumed run keeps the times of the run that generated
            stats = {"cpu_s": round(time.process_time() - c0, 1), "wall_s": round(time.time() - t0, 1)}
            atomic_write_json(stats_file, stats)
        gen_stats[name] = json.loads(stats_file.read_text())

    img_nii, lab_nii = nib.load(pair["image"]), nib.load(pair["label"])
    real = np.asarray(img_nii.dataobj, dtype=np.float32)
    label = np.asarray(lab_nii.dataobj)
    arrays = {"real": real, f"real_roundtrip_{args.size}px": roundtrip(real, args.size)}
    arrays.update({k: np.asarray(nib.load(str(v)).dataobj, dtype=np.float32) for k, v in volumes.items()})
    for k, v in arrays.items():
        assert v.shape == label.shape, (k, v.shape)
    metrics = {}
    for k, v in arrays.items():
        r = adjacent_slice_similarity(to_ras(v, img_nii.affine)[0], to_ras(label, lab_nii.affine)[0], axis=2)
        metrics[k] = {
            "ncc": round(r["ncc"], 4),
            "ssim": round(r["ssim"], 4),
            "jitter": round(r["jitter"], 4),
            "jitter_ratio": round(r["jitter_ratio"], 3),
            "pairs": r["pairs"],
        }
        logger.info(f"{k}: {metrics[k]}")
    gaps = {k: round(metrics["real"]["ncc"] - metrics[k]["ncc"], 4) for k in volumes}
    ssim_gaps = {k: round(metrics["real"]["ssim"] - metrics[k]["ssim"], 4) for k in volumes}
    jitter_excess = {k: round(metrics[k]["jitter"] - metrics["real"]["jitter"], 4) for k in volumes}
    target = {}
    for k in ("consistent", "consistent_shared_noise", "independent_shared_noise"):
        target[k] = {
            "ncc_within_0.05_of_real": abs(gaps[k]) <= 0.05,
            "ncc_gap_at_most_half_the_independent_gap": abs(gaps[k]) <= 0.5 * abs(gaps["independent"]),
            "jitter_excess_at_most_half_the_independent_excess": abs(jitter_excess[k])
            <= 0.5 * abs(jitter_excess["independent"]),
        }

    lo, hi = (float(v) for v in np.percentile(real[label > 0], [0.5, 99.5]))
    fig_rows = {"real": real, "independent": arrays["independent"], "consistent": arrays["consistent"]}
    reformat_figure(
        fig_rows, lab_nii.affine, out / "reformats.png", ranges={k: (lo, hi) for k in fig_rows}, label=label
    )
    all_rows = {k: arrays[k] for k in ("real", *runs)}
    reformat_figure(
        all_rows, lab_nii.affine, out / "reformats_all.png", ranges={k: (lo, hi) for k in all_rows}, label=label
    )
    for png in ("reformats.png", "reformats_all.png"):
        shrink_png(out / png)

    command = "OMP_NUM_THREADS={} python scripts/volume_consistency.py {}".format(
        args.threads, " ".join(argv if argv is not None else sys.argv[1:])
    )
    results = {
        "command": command,
        "settings": {k: v for k, v in vars(args).items() if k not in ("output", "work", "device")},
        "data": {"image": "MNI152 2009 T1 3D demo (128 x 128 x 189, 1.5 x 1.5 x 1 mm)", "slice_axis": 2},
        "training": {m: s for m, (_, s) in models.items()},
        "generation": gen_stats,
        "adjacent_slice_similarity": metrics,
        "ncc_gap_to_real": gaps,
        "ssim_gap_to_real": ssim_gaps,
        "jitter_excess_over_real": jitter_excess,
        "target": target,
        "train_and_generate_cpu_s": round(
            sum(s["cpu_s"] for _, s in models.values()) + sum(s["cpu_s"] for s in gen_stats.values()), 1
        ),
        "this_invocation_cpu_s": round(time.process_time() - c_start, 1),
        "this_invocation_wall_s": round(time.time() - t_start, 1),
        "versions": versions(),
    }
    atomic_write_json(out / "results.json", results)
    atomic_write_text(out / "README.md", markdown(results))
    logger.info(f"results in {out}")
    return results


def markdown(r: dict) -> str:
    m = r["adjacent_slice_similarity"]
    lines = [
        "# Slice consistency of whole synthetic volumes (MNI152 demo)",
        "",
        "Adjacent-slice similarity along the slicing axis (axial, z) inside the foreground: mean normalised",
        "cross-correlation (NCC) and SSIM of neighbouring slices over the in-plane bounding box of their labels",
        "(`monai_siamese.quality.adjacent_slice_similarity`), for the real demo volume and for volumes generated",
        "from its label volume by `VolumeGenerator`; and the through-plane jitter, the mean absolute second difference",
        "along z inside the foreground of [0, 1]-scaled intensities (stripes; NCC saturates for smooth generators).",
        "Gap = real - synthetic (NCC); jitter excess = synthetic - real.",
        "",
        f"Command: `{r['command']}`",
        "",
        "| volume | NCC | SSIM | jitter | jitter / in-plane gradient | NCC gap to real | jitter excess | pairs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for k, v in m.items():
        gap = r["ncc_gap_to_real"].get(k, "")
        exc = r["jitter_excess_over_real"].get(k, "")
        lines.append(
            f"| {k} | {v['ncc']:.4f} | {v['ssim']:.4f} | {v['jitter']:.4f} | {v['jitter_ratio']:.3f} | {gap} | "
            f"{exc} | {v['pairs']} |"
        )
    s = r["settings"]
    t = r["training"]
    lines += [
        "",
        "Targets (met?): "
        + "; ".join(f"{k}: " + ", ".join(f"{t} **{ok}**" for t, ok in v.items()) for k, v in r["target"].items()),
        "",
        "## Setup",
        "",
        f"- Data: {r['data']['image']}; models trained on its axial slices with any foreground "
        f"({t['independent']['slices']} slices), fitted to {s['size']} x {s['size']}; generation from the same label "
        "volume (one subject: this measures slice consistency, not generalisation).",
        f"- Denoiser: MONAI `DiffusionModelUNet` channels {tuple(s['channels'])}, 1 res block, no attention, concat "
        f"conditioning; {s['iterations']} iterations at batch {s['batch_size']} per model (same budget), AdamW "
        f"lr {s['lr']} with warm-up + cosine, {s['prediction_type']} prediction, T = 1000 linear betas, "
        + (f"EMA weights (ignite momentum {s['ema_momentum']}) for sampling" if s["ema_momentum"] else "no EMA")
        + ", MONAI `SupervisedTrainer`.",
        f"- independent: condition = one-hot mask ({t['independent']['condition_channels']} channels). consistent: "
        f"mask + {s['context_slices']} neighbour mask(s) per side + previous slice image "
        f"({t['consistent']['condition_channels']} channels), previous-image dropout {s['previous_dropout']}, "
        f"noise std {s['previous_noise']}.",
        f"- Sampling: DDIM {s['steps']} steps, eta 0; empty slices (no label) filled with the background; "
        "`shared_noise` = the same initial noise for every slice of the volume.",
        f"- `real_roundtrip_{s['size']}px`: the real volume's slices fitted to the model size and back: the similarity "
        "the model's resolution alone gives (generated slices are upsampled the same way).",
        "- Training CPU seconds: "
        + ", ".join(f"{k} {v['cpu_s']} s ({v['iterations']} it)" for k, v in t.items())
        + "; generation CPU seconds: "
        + ", ".join(f"{k} {v['cpu_s']} s" for k, v in r["generation"].items())
        + f"; together {r['train_and_generate_cpu_s']} CPU s (one thread on 2 cores shared with other jobs).",
        "",
        "## Figure",
        "",
        "`reformats.png`: rows = real, independent, consistent, label; columns = axial, coronal, sagittal through the",
        "label's centre of mass (true aspect ratio, anterior / superior up). `reformats_all.png` adds the shared-noise",
        "runs.",
        "",
        "![reformats](reformats.png)",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
