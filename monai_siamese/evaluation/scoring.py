"""Scoring steps of the evaluation: a segmenter's Dice on real slices, the faithfulness / fidelity / diversity of a
synthetic set under the judge, and the selection of a set's pairs by a regime segmenter."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from monai_siamese.utils import atomic_write_json

__all__ = ["load_images", "class_table", "score_segmentation", "real_reference", "synthetic_quality", "select_pairs"]


def load_images(settings: Any, entries: Sequence[Mapping], spatial_size: Sequence[int] | None = None) -> dict:
    """Images and labels of ``entries`` preprocessed with a segmenter's settings, stacked.

    Args:
        settings: :class:`~monai_siamese.quality.SegmenterSettings`.
        entries: datalist entries.
        spatial_size: fit to this size (default: the segmenter's).

    Returns:
        ``{"image": (B, C, H, W), "label": (B, 1, H, W), "items": [...]}``.
    """
    ds = settings.dataset(entries, spatial_size=spatial_size)
    items = [ds[i] for i in range(len(ds))]
    return {
        "image": torch.stack([torch.as_tensor(it["image"]).float() for it in items]),
        "label": torch.stack([torch.as_tensor(it["label"]).long() for it in items]),
        "items": items,
    }


def class_table(scores: torch.Tensor, class_names: Sequence[str]) -> dict[str, float]:
    """Per-class means of per-slice ``scores`` (NaN where a class is absent) by name, and their ``mean``."""
    from monai_siamese.quality import nanmean_per_class

    per = nanmean_per_class(scores)
    out = {name: per[i] for i, name in enumerate(class_names)}
    out["mean"] = float(np.nanmean(per)) if per else float("nan")
    return out


def score_segmentation(
    model: str | os.PathLike, entries: Sequence[Mapping], class_names: Sequence[str], device: str | None = None
) -> dict:
    """Dice and IoU per foreground class (mean over test slices where the class is present) of a trained
    segmenter on real ``entries``, at the segmenter's input size.

    Args:
        model: weights file with its ``segmenter.json`` (or a checkpoint folder).
        entries: the held-out real entries.
        class_names: names of the foreground classes.
        device: device.
    """
    from monai_siamese.quality import load_segmenter, per_class_scores

    seg = load_segmenter(model, device=device)
    data = load_images(seg.settings, entries)
    pred = seg.predict(data["image"])
    scores = per_class_scores(pred, data["label"], seg.num_classes)
    return {
        "dice": class_table(scores["dice"], class_names),
        "iou": class_table(scores["iou"], class_names),
        "slices": int(pred.shape[0]),
        "model": str(model),
    }


def real_reference(
    judge: Any,
    test: Sequence[Mapping],
    pool: Sequence[Mapping],
    size: Sequence[int],
    class_names: Sequence[str],
    kid_subsets: int = 100,
    inception: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict:
    """What real data scores at the synthetic images' ``size``, for scale: FID/KID between two real sets (the test
    slab against the pool: the value different real anatomy gives), and the judge's Dice on the real test slices
    fitted to that size, computed as faithfulness is (``faithfulness_dice``: the judge's segmentation of the
    resized image against the resized label). The latter is the like-for-like reference of faithfulness: fine
    structures (CSF) lost at a generator's smaller size cost real slices there too."""
    from monai_siamese.quality import faithfulness_dice, frechet_distance, kernel_inception_distance

    real_test = load_images(judge.settings, test, spatial_size=size)
    real_pool = load_images(judge.settings, pool, spatial_size=size)
    f_test, f_pool = judge.features(real_test["image"]), judge.features(real_pool["image"])
    kid, kid_std = kernel_inception_distance(f_pool, f_test, num_subsets=kid_subsets)
    out = {"fid": frechet_distance(f_pool, f_test), "kid": kid, "kid_std": kid_std, "image_size": list(size)}
    out["sets"] = {"test": len(test), "pool": len(pool)}
    dice = faithfulness_dice(judge, real_test["image"], real_test["label"], judge.num_classes)
    out["test_dice_at_size"] = class_table(dice, class_names)
    if inception is not None:
        i_test, i_pool = inception(real_test["image"]), inception(real_pool["image"])
        out["fid_inception"] = frechet_distance(i_pool, i_test)
        out["kid_inception"] = kernel_inception_distance(i_pool, i_test, num_subsets=kid_subsets)[0]
    return out


def synthetic_quality(
    judge: Any,
    synthetic_datalist: str,
    pool: Sequence[Mapping],
    class_names: Sequence[str],
    kid_subsets: int = 100,
    inception: Callable[[torch.Tensor], torch.Tensor] | None = None,
    seed: int = 0,
) -> dict:
    """Faithfulness, fidelity and diversity of one synthetic set, judged by a segmenter trained on real data.

    - faithfulness: Dice per class between the judge's segmentation of each synthetic image and its mask;
    - fidelity: FID and KID between the judge's pooled encoder features of the synthetic images and of the real
      ``pool`` images; both sets are first fitted to the synthetic images' size, then go through the same
      resizing to the judge's input, so resolution alone does not count as infidelity;
    - diversity: mean pairwise MS-SSIM between the samples of each mask (grouped by ``mask_index``).

    Args:
        judge: :class:`~monai_siamese.quality.Segmenter` trained on the real training pool.
        synthetic_datalist: the synthetic datalist (``training`` split).
        pool: the real reference entries.
        class_names: names of the foreground classes.
        kid_subsets: KID subsets.
        inception: optional Inception feature extractor (adds ``fid_inception``/``kid_inception``).
        seed: KID subset seed.
    """
    from monai_siamese.data import image_shape, load_datalist
    from monai_siamese.quality import (
        faithfulness_dice,
        frechet_distance,
        kernel_inception_distance,
        mean_pairwise_ms_ssim,
    )

    nan = float("nan")
    entries = load_datalist(synthetic_datalist, "training", required=False)
    if not entries:  # e.g. a quality filter that accepted nothing: nothing to score, the report shows n/a
        empty = {c: nan for c in [*class_names, "mean"]}
        return {"pairs": 0, "masks": 0, "faithfulness_dice": empty, "fid": nan, "kid": nan, "kid_std": nan,
                "ms_ssim": nan, "real_reference_images": len(pool)}  # fmt: skip
    syn_size = image_shape(entries[0]["image"])
    syn = load_images(judge.settings, entries, spatial_size=syn_size)
    dice = faithfulness_dice(judge, syn["image"], syn["label"], judge.num_classes)
    # FID and KID need two samples per set (a covariance, pairs of samples); a filter may keep only one pair, and then
    # the real pool is not read at all
    fid = kid = kid_std = nan
    real = None
    if len(entries) >= 2:
        real = load_images(judge.settings, pool, spatial_size=syn_size)
        f_syn, f_real = judge.features(syn["image"]), judge.features(real["image"])
        fid = frechet_distance(f_real, f_syn)
        kid, kid_std = kernel_inception_distance(f_real, f_syn, num_subsets=kid_subsets, seed=seed)
    groups: dict[int, list[torch.Tensor]] = {}
    for e, img in zip(entries, syn["image"]):
        groups.setdefault(int(e.get("mask_index", -1)), []).append(img)
    ms_ssim = mean_pairwise_ms_ssim([torch.stack(g) for g in groups.values()])
    out = {
        "pairs": len(entries),
        "masks": len(groups),
        "image_size": list(syn_size),
        "faithfulness_dice": class_table(dice, class_names),
        "fid": fid,
        "kid": kid,
        "kid_std": kid_std,
        "ms_ssim": ms_ssim,
        "real_reference_images": len(pool),
    }
    if inception is not None and real is not None:
        i_syn, i_real = inception(syn["image"]), inception(real["image"])
        out["fid_inception"] = frechet_distance(i_real, i_syn)
        out["kid_inception"] = kernel_inception_distance(i_real, i_syn, num_subsets=kid_subsets, seed=seed)[0]
    return out


def select_pairs(
    segmenter: str | os.PathLike,
    synthetic_datalist: str,
    folder: str | os.PathLike,
    mode: str = "select",
    dice_threshold: float = 0.7,
    fraction: float = 0.5,
    device: str | None = None,
) -> dict:
    """Select pairs of a synthetic set by usefulness, scored by a segmenter trained on the regime's real pairs only
    (a cheap form of GenSeg's segmentation feedback): ``filter`` keeps the pairs whose faithfulness (the segmenter's
    mean Dice against the conditioning mask, over the mask's classes) is at least ``dice_threshold``; ``select``
    keeps, of those, the ``fraction`` with the highest segmenter loss (DiceCE of the segmenter on the pair: faithful
    pairs the segmenter still gets wrong, i.e. informative ones). Writes ``folder/datalist.json`` (absolute paths)
    and the scores.

    Args:
        segmenter: the regime segmenter's weights (with its ``segmenter.json``).
        synthetic_datalist: the set's datalist.
        folder: output folder.
        mode: ``filter`` or ``select``.
        dice_threshold: faithfulness threshold.
        fraction: fraction kept by ``select`` (of the filtered pairs; at least one pair).
        device: device.
    """
    from monai.losses import DiceCELoss

    from monai_siamese.data import load_datalist, write_datalist
    from monai_siamese.quality import load_segmenter, per_class_scores

    if mode not in ("filter", "select"):
        raise ValueError(f"selection must be filter or select, got {mode!r}")
    seg = load_segmenter(segmenter, device=device)
    entries = load_datalist(synthetic_datalist, "training")
    data = load_images(seg.settings, entries)
    logits = seg.predict_logits(data["image"])
    dice = per_class_scores(logits.argmax(1, keepdim=True), data["label"], seg.num_classes)["dice"]
    faithful = torch.nan_to_num(dice, nan=0.0).sum(1) / (~torch.isnan(dice)).sum(1).clamp_min(1)  # mask's classes
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)  # per pair: one call each (DiceCE has no per-item reduction)
    loss = torch.stack([loss_fn(logits[i : i + 1], data["label"][i : i + 1]) for i in range(len(entries))])
    keep = torch.nonzero(faithful >= dice_threshold).flatten()
    if mode == "select" and keep.numel():
        k = max(1, int(round(fraction * keep.numel())))
        keep = keep[torch.argsort(loss[keep], descending=True)[:k]]
    if keep.numel() == 0:
        raise RuntimeError(
            f"{synthetic_datalist}: no pair reaches faithfulness Dice {dice_threshold} (best "
            f"{float(faithful.max()):.3f}) under the regime segmenter: lower selection_dice or train the generator longer"
        )
    kept = [entries[int(i)] for i in sorted(keep.tolist())]
    folder = Path(folder)
    datalist = write_datalist(folder / "datalist.json", {"training": kept}, relative=False)
    atomic_write_json(
        folder / "scores.json",
        {"faithfulness": faithful.tolist(), "loss": loss.tolist(), "kept": sorted(keep.tolist())},
    )
    return {
        "datalist": datalist,
        "kept": len(kept),
        "total": len(entries),
        "mode": mode,
        "mean_faithfulness_kept": float(faithful[keep].mean()),
        "mean_faithfulness_all": float(faithful.mean()),
    }
