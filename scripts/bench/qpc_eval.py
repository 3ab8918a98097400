"""Quality per compute, sampling side: faithfulness Dice and FID (on the judge's features) of exported generator
weights at several samplers and step counts.

The evaluation set is fixed for every run: the demo validation masks (``val_seeds`` noise seeds each) and
``train_masks`` evenly spaced training-pool masks (one seed each), at the generator's size. Every setting samples the
same masks from the same noise, so differences between settings are paired. Faithfulness = the judge's mean
foreground Dice against the conditioning masks (on the validation samples, and on all samples); FID = Fréchet distance
between the judge's pooled encoder features of all samples and of the real pool images (training + validation), both
at the generator's size and resized alike to the judge's input.

The conditions and the denoiser come from the bundle configs: ``train#val_dataset`` (the bundle's own condition
transform; for MedDiff-FT the inpainting condition with the largest margin) with its datalist overridden, and
``denoiser`` of ``inference.json`` with ``model_path`` set to the export.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "STEPS",
    "TODAY_SAMPLER",
    "eval_reals",
    "samplers_for",
    "EvalSet",
    "build_eval_set",
    "evaluate_export",
    "sample_grid",
]

#: sampling step counts evaluated
STEPS = (4, 8, 16, 50)
#: today's demo sampler (v-prediction DDPM, DDIM 25 steps): evaluated for ``ddpm_v`` too
TODAY_SAMPLER = ("ddim", 25)


def samplers_for(objective: str, steps: Sequence[int] | None = None, reference: bool = True) -> list[tuple[str, int]]:
    """The (sampler, steps) settings evaluated for an objective: rectified flow with Euler at each step count; DDPM
    objectives with DPM-Solver++ (2M) at each step count, plus (``reference``) DDIM at the largest as the reference
    point, and for ``ddpm_v`` today's demo setting (DDIM 25)."""
    steps = sorted(int(s) for s in (steps or STEPS))
    if objective == "rflow":
        return [("euler", s) for s in steps]
    out = [("dpmpp_2m", s) for s in steps] + ([("ddim", steps[-1])] if reference else [])
    if objective == "ddpm_v" and steps[-1] > TODAY_SAMPLER[1]:
        out.append(TODAY_SAMPLER)
    return out


class EvalSet:
    """The fixed masks (and their real images) of the evaluation: ``entries`` (datalist entries), ``seeds`` (one per
    sample), ``is_val`` (sample from a validation mask)."""

    def __init__(self, entries: list[dict], seeds: list[int], is_val: list[bool], pool: list[dict]) -> None:
        self.entries, self.seeds, self.is_val, self.pool = entries, seeds, is_val, pool


def build_eval_set(val_seeds: int = 4, train_masks: int = 24) -> EvalSet:
    """The demo validation masks x ``val_seeds`` seeds, plus ``train_masks`` evenly spaced training masks."""
    from monai_siamese.data import ensure_demo_data, load_datalist

    demo = ensure_demo_data()
    dl = str(Path(demo) / "datalist.json")
    val, train = load_datalist(dl, "validation", demo), load_datalist(dl, "training", demo)
    idx = [round(i * (len(train) - 1) / max(train_masks - 1, 1)) for i in range(train_masks)] if train_masks else []
    entries, seeds, is_val = [], [], []
    for k in range(val_seeds):
        for i, e in enumerate(val):
            entries.append(e)
            seeds.append(1000 * k + i)
            is_val.append(True)
    for j, i in enumerate(idx):
        entries.append(train[i])
        seeds.append(50_000 + j)
        is_val.append(False)
    return EvalSet(entries, seeds, is_val, train + val)


_ITEMS: dict[tuple, dict[str, dict]] = {}


def _items(method: str, overrides: Mapping[str, Any], entries: Sequence[dict], size_config: str) -> list[dict]:
    """Items of ``entries`` through the bundle's validation dataset (its condition transform), in order (cached per
    method and size)."""
    from bench.bundle_setup import bundle_parser

    unique = list({e["image"]: e for e in entries}.values())
    key = (method, size_config, str(overrides.get("spatial_size")), tuple(e["image"] for e in unique))
    if key not in _ITEMS:
        over = {**overrides, "val_datalist": unique, "validate_data": False}
        parser = bundle_parser(method, ["train.json", size_config], overrides=over)
        ds = parser.get_parsed_content("train#val_dataset")
        _ITEMS[key] = {str(ds[i]["source_image"]): ds[i] for i in range(len(ds))}
    return [_ITEMS[key][str(e["image"])] for e in entries]


def eval_reals(val_seeds: int, train_masks: int, size: int, size_config: str = "demo.json") -> torch.Tensor:
    """The real images of the evaluation masks (for the last column of the sample grids)."""
    eval_set = build_eval_set(val_seeds, train_masks)
    items = _items("seg_guided_diffusion", {"spatial_size": [size, size]}, eval_set.entries, size_config)
    return _stack(items, "image").float()


def _denoiser(method: str, overrides: Mapping[str, Any], weights: str, size_config: str) -> torch.nn.Module:
    from bench.bundle_setup import bundle_parser

    over = {**overrides, "model_path": weights, "validate_data": False}
    parser = bundle_parser(method, ["inference.json", size_config], overrides=over)
    return parser.get_parsed_content("denoiser").eval()


def sample_grid(labels: torch.Tensor, samples: torch.Tensor, reals: torch.Tensor | None, path: str | Path) -> str:
    """A PNG with one row per mask: ``mask | sample | real``."""
    from monai_siamese.data.visualize import grid, label_to_rgb, save_png, to_uint8

    rows = []
    for i in range(labels.shape[0]):
        row = [label_to_rgb(labels[i]), to_uint8(samples[i])]
        if reals is not None:
            row.append(to_uint8(reals[i]))
        rows.append(row)
    return save_png(grid(rows), Path(path))


def evaluate_export(
    method: str,
    objective_over: Mapping[str, Any],
    weights: str,
    judge: Any,
    eval_set: EvalSet,
    settings: Sequence[tuple[str, int]],
    samples_dir: str | Path | None = None,
    batch: int = 48,
    size_config: str = "demo.json",
) -> dict[str, Any]:
    """Faithfulness and FID of one export at each (sampler, steps) setting.

    Args:
        method: generator bundle.
        objective_over: the overrides the generator was trained with (objective, prediction type, sizes...).
        weights: the exported weights.
        judge: :class:`~monai_siamese.quality.Segmenter`.
        eval_set: :func:`build_eval_set`.
        settings: (sampler, steps) pairs.
        samples_dir: where to keep the samples (``<sampler>_<steps>.pt``, float16) for grids.
        batch: samples per sampler call.
        size_config: the bundle config with the generator's size (``demo.json``; ``tiny.json`` in tests).
    """
    from monai_siamese.diffusion import make_scheduler
    from monai_siamese.inferers import ConditionalSampler, seeded_noise
    from monai_siamese.quality import faithfulness_dice, frechet_distance

    over = dict(objective_over)
    items = _items(method, over, eval_set.entries, size_config)
    cond = _stack(items, "cond").float()
    labels = _stack(items, "label").long()
    reals = _stack(items, "image").float()
    pool = _stack(_items(method, over, eval_set.pool, size_config), "image").float()
    f_pool = judge.features(pool)
    denoiser = _denoiser(method, over, weights, size_config)
    parser_pred = _prediction(method, over)
    noise = seeded_noise((1, *cond.shape[2:]), eval_set.seeds)
    val = torch.tensor(eval_set.is_val)
    out: dict[str, Any] = {"weights": weights, "samples": int(cond.shape[0]), "val_samples": int(val.sum())}
    per: dict[str, Any] = {}
    for sampler_name, steps in settings:
        sampler = ConditionalSampler(make_scheduler(sampler_name, prediction_type=parser_pred), steps)
        w0, c0 = time.perf_counter(), time.process_time()
        with torch.no_grad():
            images = torch.cat(
                [sampler(denoiser, cond[i : i + batch], noise[i : i + batch]) for i in range(0, cond.shape[0], batch)]
            )
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        dice = faithfulness_dice(judge.predict, images, labels, judge.num_classes)
        per_class_val = [float(v) for v in torch.nanmean(dice[val], 0)]
        per_class_all = [float(v) for v in torch.nanmean(dice, 0)]
        key = f"{sampler_name}_{steps}"
        per[key] = {
            "sampler": sampler_name,
            "steps": steps,
            "faithfulness_val": float(torch.tensor(per_class_val).nanmean()),
            "faithfulness_val_per_class": per_class_val,
            "faithfulness_all": float(torch.tensor(per_class_all).nanmean()),
            "faithfulness_all_per_class": per_class_all,
            "fid": frechet_distance(f_pool, judge.features(images)),
            "sampling_cpu_s_per_image": cpu / images.shape[0],
            "sampling_wall_s_per_image": wall / images.shape[0],
        }
        if samples_dir is not None:
            Path(samples_dir).mkdir(parents=True, exist_ok=True)
            torch.save({"images": images.half(), "labels": labels.to(torch.uint8)}, Path(samples_dir) / f"{key}.pt")
    out["settings"] = per
    if not hasattr(judge, "_real_reference"):  # the real images' own scores, once per judge
        d_real = faithfulness_dice(judge.predict, reals, labels, judge.num_classes)
        judge._real_reference = {
            "faithfulness_val": float(torch.nanmean(d_real[val], 0).nanmean()),
            "faithfulness_all": float(torch.nanmean(d_real, 0).nanmean()),
            "fid_eval_reals_vs_pool": frechet_distance(f_pool, judge.features(reals)),
        }
    out["real_reference"] = judge._real_reference
    return out


def _stack(items: Sequence[Mapping], key: str) -> torch.Tensor:
    """``items[i][key]`` stacked as a plain tensor (no MetaTensor: its dispatch slows every op, and its metadata
    would go into saved sample files)."""
    return torch.stack([torch.as_tensor(it[key]).as_subclass(torch.Tensor) for it in items])


def _prediction(method: str, over: Mapping[str, Any]) -> str:
    from monai_siamese.diffusion import prediction_for

    return prediction_for(over.get("objective", "ddpm"), over.get("prediction_type", "epsilon"))
