"""The evaluation's tasks that run in worker processes (:func:`~monai_siamese.evaluation.runner.run_tasks`): a
segmentation run, a generator training, a synthetic set. Each is a chain of cached steps
(:func:`~monai_siamese.evaluation.steps.cached_step`) keyed by its settings and by the runs of the steps it reads
(``after``), so a resumed evaluation redoes a step, and everything made from it, when either changed. The settings
of every training and sampling step hold its bundle's version (``configs/metadata.json``), so a step made by an
earlier version of the bundle (other defaults, other behaviour) is redone too.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from monai_siamese.bundles import bundle_version, read_config
from monai_siamese.evaluation.scoring import score_segmentation, synthetic_quality
from monai_siamese.evaluation.steps import cached_step, sample_generator, train_generator, train_segmentation

__all__ = ["log_progress", "segmentation_run", "generator_run", "training_overrides", "sampling_run"]


def log_progress(msg: str) -> None:
    print(f"[evaluate] {time.strftime('%H:%M:%S')} {msg}", flush=True)


def segmentation_run(
    folder: str,
    bundle: str,
    configs: list[str],
    datalist: str,
    seed: int,
    test: list[dict],
    class_names: list[str],
    common: dict[str, Any],
    synthetic_datalist: str | None = None,
    synthetic_ratio: float = 0.0,
    val_split: str = "validation",
    dataset_dir: str | None = None,
    device: str | None = None,
    synthetic_until: float = 1.0,
    after: list[str] | None = None,
) -> dict:
    """A segmentation arm: train (cached; ``after``: the folders of the draw and of the synthetic set's step), then
    score on test (cached)."""
    folder = Path(folder)
    arm = {
        "synthetic_datalist": synthetic_datalist,
        "synthetic_ratio": synthetic_ratio,
        "synthetic_until": synthetic_until,
        "val_split": val_split,
        "dataset_dir": dataset_dir,
    }
    cached_step(
        folder / "train",
        lambda: train_segmentation(bundle, configs, datalist, folder, seed, **arm, **common),
        log_progress,
        settings={
            "bundle": _version(bundle),
            "configs": configs,
            "datalist": datalist,
            "seed": seed,
            "common": common,
            **arm,
        },
        after=list(after or []),
        outputs=[folder / "models", folder / "logs"],
    )
    return cached_step(
        folder / "test",
        lambda: score_segmentation(folder / "models" / "model_final.pt", test, class_names, device),
        log_progress,
        settings={"test": test, "class_names": class_names},
        after=[folder / "train"],
    )


def generator_run(
    folder: str,
    bundle: str,
    configs: list[str],
    datalist: str,
    seed: int,
    iterations: int | None,
    overrides: dict[str, Any],
    after: list[str] | None = None,
) -> dict:
    """A generator training, cached (``after``: the folders of the draw and, for a fine-tuner or a warm start, of
    its base generator's training)."""
    return cached_step(
        Path(folder) / "train",
        lambda: train_generator(bundle, configs, datalist, folder, seed, iterations, overrides),
        log_progress,
        settings={
            "bundle": _version(bundle),
            "configs": configs,
            "datalist": datalist,
            "seed": seed,
            "iterations": iterations,
            "overrides": training_overrides(bundle, configs, overrides),
        },
        after=list(after or []),
        outputs=[Path(folder) / name for name in ("models", "logs", "samples")],
    )


def _version(bundle: str) -> dict[str, str | None]:
    return {"name": Path(bundle).name, "version": bundle_version(bundle)}


def training_overrides(bundle: str, configs: list[str], overrides: dict[str, Any]) -> dict[str, Any]:
    """The overrides a generator's training can read: those whose key (its part before the first ``#``) its
    training config has. The evaluation's per-method overrides also carry sampling settings (``guidance_scale``,
    ``sampler``), which make no other training: a change of those alone does not retrain the generator."""
    config = read_config(bundle, configs).get()
    return {k: v for k, v in overrides.items() if str(k).split("#")[0] in config}


def sampling_run(
    folder: str,
    bundle: str,
    configs: list[str],
    ckpt_dir: str,
    seed: int,
    sampling: dict[str, Any],
    judge: str,
    pool: list[dict],
    class_names: list[str],
    kid_subsets: int,
    inception_weights: str | None = None,
    device: str | None = None,
    after: list[str] | None = None,
) -> dict:
    """One synthetic set: sample (cached; ``after``: the generator's training and any segmenter its sampling reads,
    e.g. MedDiff-FT's quality filter), then its faithfulness / fidelity / diversity under the judge (cached)."""
    from monai_siamese.quality import InceptionFeatures, load_segmenter

    folder = Path(folder)
    synth = cached_step(
        folder / "sample",
        lambda: sample_generator(bundle, configs, ckpt_dir, folder, seed, **sampling),
        log_progress,
        settings={"bundle": _version(bundle), "configs": configs, "ckpt_dir": ckpt_dir, "seed": seed, **sampling},
        after=list(after or []),
        outputs=[folder / "synthetic"],
    )
    inception = InceptionFeatures(inception_weights, device=device or "cpu") if inception_weights else None
    return cached_step(
        folder / "quality",
        lambda: synthetic_quality(
            load_segmenter(judge, device=device), synth["datalist"], pool, class_names, kid_subsets, inception, seed
        ),
        log_progress,
        settings={"pool": pool, "class_names": class_names, "kid_subsets": kid_subsets, "inception": inception_weights},
        after=[folder / "sample", Path(judge).parent.parent / "train"],
    )
