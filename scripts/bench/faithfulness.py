"""Faithfulness Dice of the segmentation-guided model per sampler setting (the speed mode's "equal quality" test).

The generator is ``--generator`` (weights of the bundle's ``demo.json`` architecture) or a quick one trained here
with ``demo.json``; the segmenter is ``--segmenter`` or a quick one trained with the segmentation bundle's
``demo.json`` at 64 x 64. Both are trained through ``monai_siamese.bundles.run_bundle``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from bench.speed_sample import SAMPLER_SETTINGS, Autocast

__all__ = ["quality_worker"]

NUM_CLASSES = 4


def _quick_overrides(folder: Path, demo_dir: str, size: int, iterations: int) -> dict[str, Any]:
    from monai_siamese.bundles import folder_overrides

    return {
        "dataset_dir": demo_dir,
        **folder_overrides(folder),
        "spatial_size": [size, size],
        "num_iterations": iterations,
        "epoch_length": min(iterations, 100),
        "num_workers": 0,
        "checkpoint_interval": iterations,
        "resume": False,
    }


def quality_worker(cfg: dict[str, Any]) -> dict[str, Any]:
    """Faithfulness Dice (mean and per foreground class) for each setting of :data:`SAMPLER_SETTINGS`, and of the
    real images."""
    from monai_siamese.bundles import bundle_path, read_config, run_bundle
    from monai_siamese.data import ensure_demo_data
    from monai_siamese.diffusion import make_scheduler
    from monai_siamese.inferers import ConditionalSampler, seeded_noise
    from monai_siamese.networks import ConcatConditionedUNet, load_weights
    from monai_siamese.quality import faithfulness_dice, load_segmenter

    device = torch.device(cfg["device"])
    work = Path(cfg["work_dir"])
    demo = ensure_demo_data()
    res: dict[str, Any] = {"kind": "quality", "timings_s": {}}
    gen_size = cfg["quality_size"]
    t0 = time.perf_counter()
    if cfg.get("segmenter"):
        segmenter = load_segmenter(cfg["segmenter"], device=device)
        res["segmenter"] = cfg["segmenter"]
    else:
        over = _quick_overrides(work / "segmenter", demo, 64, cfg["segmenter_iterations"])
        over.update({"network_def#channels": [16, 32, 64, 128], "val_interval": 1000})
        configs = ["common.json", "train.json", "demo.json"]
        run_bundle("segmentation", configs, "training", "train", over)
        segmenter = load_segmenter(bundle_path("segmentation"), configs=configs, overrides=over, device=device)
        res["segmenter"] = f"quick: segmentation bundle demo.json, 64x64, {cfg['segmenter_iterations']} iterations"
    res["timings_s"]["segmenter"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    gen_over = _quick_overrides(work / "generator", demo, gen_size, cfg["generator_iterations"])
    gen_over.update({"sample_interval": 0, "ema_warmup_iters": max(cfg["generator_iterations"] // 3, 1)})
    if cfg.get("generator"):
        weights = cfg["generator"]
        res["generator"] = weights
    else:
        run_bundle("seg_guided_diffusion", ["train.json", "demo.json"], "training", "train", gen_over)
        weights = str(work / "generator" / "models" / "model.safetensors")
        res["generator"] = (
            f"quick: seg_guided_diffusion demo.json, {gen_size}x{gen_size}, {cfg['generator_iterations']} iterations"
        )
    res["timings_s"]["generator"] = time.perf_counter() - t0
    parser = read_config(
        "seg_guided_diffusion",
        ["inference.json", "demo.json"],
        {
            **gen_over,
            "bundle_root": str(bundle_path("seg_guided_diffusion")),
            "mask_split": "validation",
            "device": f"$torch.device('{device}')",
        },
    )
    unet = load_weights(parser.get_parsed_content("network_def"), weights).to(device).eval()
    amp = bool(cfg["amp"]) and device.type == "cuda"
    denoiser = Autocast(ConcatConditionedUNet(unet), amp, device)
    prediction = parser.get_parsed_content("prediction")
    dataset = parser.get_parsed_content("dataset")
    n = min(cfg["quality_masks"], len(dataset))
    idx = [round(i * (len(dataset) - 1) / max(n - 1, 1)) for i in range(n)]
    items = [dataset[i] for i in idx]
    cond = torch.stack([torch.as_tensor(it["cond"]).float() for it in items]).as_subclass(torch.Tensor).to(device)
    labels = torch.stack([torch.as_tensor(it["label"]).long() for it in items]).as_subclass(torch.Tensor)
    noise = seeded_noise((1, *cond.shape[2:]), list(range(n)), device)
    res.update({"masks": n, "split": "validation", "prediction_type": prediction, "size": gen_size})
    res["dice"], res["dice_per_class"] = {}, {}
    t0 = time.perf_counter()
    with torch.no_grad():
        for name, steps in SAMPLER_SETTINGS:
            sampler = ConditionalSampler(make_scheduler(name, prediction_type=prediction), steps)
            images = torch.cat(
                [sampler(denoiser, cond[i : i + 16], noise[i : i + 16]).float().cpu() for i in range(0, n, 16)]
            )
            d = faithfulness_dice(segmenter.predict, images, labels, NUM_CLASSES)
            per_class = [float(v) for v in torch.nanmean(d, 0)]
            res["dice_per_class"][f"{name}_{steps}"] = per_class
            res["dice"][f"{name}_{steps}"] = float(torch.tensor(per_class).nanmean())
        real = torch.stack([torch.as_tensor(it["image"]).float() for it in items]).as_subclass(torch.Tensor)
        d = faithfulness_dice(segmenter.predict, real, labels, NUM_CLASSES)
        res["dice"]["real_images"] = float(torch.nanmean(d, 0).nanmean())
    res["timings_s"]["sampling"] = time.perf_counter() - t0
    return res
