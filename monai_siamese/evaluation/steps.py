"""The steps of the evaluation, each a function of its inputs that writes its outputs into its own folder and
ends with a ``result.json`` (written atomically, last): a rerun skips steps whose result exists.

Bundles run in-process through :func:`monai_siamese.bundles.run_bundle` (``ConfigWorkflow``), with overrides only.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from monai_siamese.bundles import folder_overrides, read_config, run_bundle
from monai_siamese.utils import atomic_write_json

__all__ = [
    "RESULT_FILE",
    "CONFIG_FILE",
    "cached_step",
    "step_key",
    "run_id",
    "draw_regime",
    "train_generator",
    "sample_generator",
    "train_segmentation",
    "divisor_at_most",
    "trained_iterations",
]

RESULT_FILE = "result.json"
CONFIG_FILE = "config.json"  # an evaluation's settings, in its root folder: step keys' paths are relative to that
STEP_FILE = "step.json"  # a step's settings, written before it runs


def cached_step(
    folder: str | os.PathLike,
    fn: Callable[[], Mapping[str, Any]],
    log: Callable[[str], None] = print,
    valid: Callable[[dict], bool] | None = None,
    settings: Any = None,
    after: Sequence[str | os.PathLike] = (),
    outputs: Sequence[str | os.PathLike] = (),
) -> dict:
    """Return ``folder/result.json`` when it exists and answers the step as asked now, else run ``fn``, add its wall
    time and write the result.

    A step is asked the same when its ``settings`` and the runs of the steps it reads (``after``) are those its
    stored result was made with. Otherwise the stored result is removed, and so are the step's ``outputs``, so that
    the step does not resume from work done with other settings (a bundle resumes from its checkpoints, a sampler
    keeps the pairs it finds); the same holds for an interrupted run: the settings are written to
    ``folder/step.json`` before the step starts. Results stored before settings were recorded are kept.

    Args:
        folder: the step's folder.
        fn: the step; returns a JSON-able mapping.
        log: progress printer.
        valid: whether a stored result still answers the step's settings (False: it is redone and replaced).
        settings: what the step's result depends on (JSON-able). Paths inside the evaluation folder (the nearest
            folder above with a :data:`CONFIG_FILE`) are compared relative to it, so a whole evaluation folder can be
            copied or moved and resumed; other paths as they are.
        after: the folders of the steps whose results or files this step reads: a result made from another run of
            one of them (its ``run_id``) is redone.
        outputs: the files and folders the step writes besides its result.
    """
    folder = Path(folder)
    path = folder / RESULT_FILE
    key = step_key(folder, settings, after)
    if path.is_file():
        cached = json.loads(path.read_text())
        if (key is None or cached.get("key", key) == key) and (valid is None or valid(cached)):
            log(f"done already: {folder}")
            return cached
        log(f"stored result made with other settings or inputs, redoing: {folder}")
        stale = True
    else:
        started = folder / STEP_FILE
        stale = key is not None and started.is_file() and json.loads(started.read_text()) != key
        if stale:
            log(f"interrupted run of other settings or inputs, starting again: {folder}")
    if stale:
        for item in [path, *outputs]:
            item = Path(item)
            if item.is_dir():
                shutil.rmtree(item)
            elif item.exists():
                item.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    if key is not None:
        atomic_write_json(folder / STEP_FILE, key)
    t0 = time.time()
    result = dict(fn())
    result["seconds"] = round(time.time() - t0, 1)
    if key is not None:
        result["key"] = key
    result["run_id"] = uuid.uuid4().hex
    atomic_write_json(path, result)
    log(f"finished in {result['seconds']:.0f}s: {folder}")
    return result


def step_key(folder: str | os.PathLike, settings: Any = None, after: Sequence[str | os.PathLike] = ()) -> dict | None:
    """What a step's result answers (see :func:`cached_step`): its settings as JSON, paths inside the evaluation
    folder relative to it, and the ``run_id`` of each step in ``after`` (None for a result stored before run ids
    were)."""
    if settings is None and not after:
        return None
    folder = Path(folder).absolute()
    root = next((p for p in [folder, *folder.parents] if (p / CONFIG_FILE).is_file()), folder.parent)
    return {"settings": _relative(_plain(settings), root), "after": [run_id(f) for f in after]}


def run_id(folder: str | os.PathLike) -> str | None:
    """The ``run_id`` of the result stored in a step's folder (None: no result, or one without a run id)."""
    path = Path(folder) / RESULT_FILE
    return json.loads(path.read_text()).get("run_id") if path.is_file() else None


def _relative(value: Any, root: Path) -> Any:
    if isinstance(value, dict):
        return {k: _relative(v, root) for k, v in value.items()}
    if isinstance(value, list):
        return [_relative(v, root) for v in value]
    if isinstance(value, str) and os.path.isabs(value) and Path(value).is_relative_to(root):
        return Path(value).relative_to(root).as_posix()
    return value


def divisor_at_most(n: int, limit: int = 100) -> int:
    """Largest divisor of ``n`` that is at most ``limit`` (the epoch length that makes ``n`` iterations exact)."""
    for d in range(min(n, limit), 0, -1):
        if n % d == 0:
            return d
    return 1


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def draw_regime(
    pool: Sequence[Mapping],
    num: int,
    seed: int,
    folder: str | os.PathLike,
    num_classes: int,
    slice_axis: int = 2,
    min_foreground: float = 1,
    foreground_classes: Sequence[int] | None = None,
    label_mapping: Mapping[int, int] | None = None,
    label_threshold: float | None = None,
    min_generator_entries: int = 64,
) -> dict:
    """Draw ``num`` real training slices from ``pool`` with ``seed`` and write the regime's datalist.

    The draw is a pure function of (``pool``, ``num``, ``seed``): every arm and every generator of the regime
    uses the same slices. 2D entries are used as they are; a slice of a 3D volume is written as a 2D NIfTI
    (source intensities, the slice's geometry) so that generators and segmentation read the same files. The
    regime datalist holds the N pairs as ``training`` and as ``validation`` (monitoring only): nothing outside
    the N pairs is seen by the regime's generator or segmentation runs. ``generator_datalist.json`` lists the
    same N pairs repeated to at least ``min_generator_entries`` entries, for generator bundles that drop
    incomplete batches (N = 4 with a batch of 8 would otherwise give no batch at all).

    Note that an ``mr`` preset scales a written slice by its own percentiles rather than its volume's.

    Args:
        pool: datalist entries (absolute paths) to draw from.
        num: N, the number of slices.
        seed: the draw's seed.
        folder: output folder (``datalist.json``, ``slices/``).
        num_classes: classes including background.
        slice_axis: slicing axis of 3D volumes.
        min_foreground: minimum foreground for a slice to be drawable (as the data layer's filter).
        foreground_classes: classes counted as foreground.
        label_mapping: label remap.
        label_threshold: binarisation threshold.
        min_generator_entries: length of the repeated training list of ``generator_datalist.json``.

    Returns:
        ``{"datalist": path, "generator_datalist": path, "entries": [...], "num_real": N}``.
    """
    from monai.transforms import Compose, LoadImaged

    from monai_siamese.data import LabelMapd, OrientVolumed, iter_slices, save_nifti, slice_name, write_datalist

    folder = Path(folder)
    load = Compose(
        [
            LoadImaged(["image", "label"], image_only=True, ensure_channel_first=True, allow_missing_keys=True),
            OrientVolumed(["image", "label"]),
            LabelMapd("label", num_classes=num_classes, mapping=label_mapping, threshold=label_threshold),
        ]
    )
    candidates: list[tuple[int, int]] = []
    for i, entry in enumerate(pool):
        lab = load({"label": entry["label"]})
        for s in iter_slices(lab, slice_axis, min_foreground, foreground_classes):
            candidates.append((i, int(s["slice_index"])))
    if len(candidates) < num:
        raise ValueError(f"the pool has {len(candidates)} usable slices, fewer than N = {num}")
    rng = np.random.default_rng([int(seed), int(num), 20251122])
    chosen = sorted(rng.choice(len(candidates), size=num, replace=False).tolist())
    entries = []
    for c in chosen:
        i, k = candidates[c]
        entry = pool[i]
        if k < 0:  # a 2D file: used as is
            entries.append({"image": entry["image"], "label": entry["label"]})
            continue
        item = load({"image": entry["image"], "label": entry["label"]})
        for s in iter_slices(item, slice_axis, 0, foreground_classes):
            if s["slice_index"] != k:
                continue
            name = slice_name(entry["image"], k)
            img_path = folder / "slices" / "images" / f"{name}.nii.gz"
            lab_path = folder / "slices" / "labels" / f"{name}.nii.gz"
            save_nifti(s["image"][0].float(), s["image"].affine, img_path)
            save_nifti(s["label"][0].to(torch.uint8), s["label"].affine, lab_path)
            entries.append({"image": str(img_path), "label": str(lab_path), "source_image": entry["image"]})
            break
    for e in entries:
        e["slice_index"] = -1
    extra = {"name": f"regime N={num} seed={seed}", "num_classes": num_classes, "seed": seed}
    datalist = write_datalist(
        folder / "datalist.json", {"training": entries, "validation": entries}, relative=False, extra=extra
    )
    # the same N pairs listed repeatedly, so that a generator bundle whose loader drops incomplete batches
    # (shuffle + drop_last) still gets full batches when N < batch size; it sees no other data
    repeats = max(1, -(-min_generator_entries // num))
    generator_datalist = write_datalist(
        folder / "generator_datalist.json",
        {"training": entries * repeats, "validation": entries},
        relative=False,
        extra={**extra, "repeats": repeats},
    )
    return {"datalist": datalist, "generator_datalist": generator_datalist, "entries": entries, "num_real": num}


def train_generator(
    bundle: str | os.PathLike,
    configs: Sequence[str],
    datalist: str,
    folder: str | os.PathLike,
    seed: int,
    iterations: int | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> dict:
    """Train a generator bundle on a regime datalist (its ``training`` split only) into ``folder``.

    Args:
        bundle: the generator bundle folder.
        configs: its config files (``train.json`` [+ ``demo.json``]).
        datalist: the regime datalist.
        folder: output folder (``models/``, ``logs/``, ``samples/``).
        seed: training seed.
        iterations: ``num_iterations`` (None: the config's).
        overrides: further overrides.
    """
    folder = Path(folder)
    over: dict[str, Any] = {
        "dataset_dir": str(Path(datalist).parent),
        "datalist": datalist,
        **folder_overrides(folder),
        "seed": int(seed),
        **dict(overrides or {}),
    }
    if iterations is not None:
        over["num_iterations"] = int(iterations)
    run_bundle(bundle, list(configs), "run", "train", over)
    done = trained_iterations(folder / "models" / "checkpoint_final.pt")
    expected = over.get("num_iterations", read_config(bundle, configs).get("num_iterations"))
    if done is not None and isinstance(expected, int) and done < expected:
        raise RuntimeError(
            f"{bundle}: the generator trained {done} of {expected} iterations (its data loader ran out of batches: "
            "fewer training slices than its batch size with drop_last?)"
        )
    return {"bundle": str(bundle), "configs": list(configs), "overrides": _plain(over), "iterations": done}


def trained_iterations(checkpoint: str | os.PathLike) -> int | None:
    """The trainer iteration stored in a ``CheckpointSaver`` checkpoint (``trainer`` entry), or None."""
    path = Path(checkpoint)
    if not path.is_file():
        return None
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    trainer = state.get("trainer") if isinstance(state, Mapping) else None
    return int(trainer["iteration"]) if isinstance(trainer, Mapping) and "iteration" in trainer else None


def sample_generator(
    bundle: str | os.PathLike,
    configs: Sequence[str],
    ckpt_dir: str,
    folder: str | os.PathLike,
    seed: int,
    mask_datalist: str,
    mask_split: str = "training",
    samples_per_mask: int = 1,
    overrides: Mapping[str, Any] | None = None,
) -> dict:
    """Sample a synthetic set with a trained generator bundle: its conditioning masks come from
    ``mask_datalist[mask_split]`` through the bundle's ``mask_source`` (in ``overrides``; the regime's masks as they
    are, or new masks made from them only); pairs and ``datalist.json`` go to ``folder/synthetic``.

    Args:
        bundle: the generator bundle folder.
        configs: its sampling config files (``inference.json`` [+ ``demo.json``]).
        ckpt_dir: the trained generator's ``models/`` folder.
        folder: output folder.
        seed: sampling seed (and the seed of new masks).
        mask_datalist: datalist of the regime's masks.
        mask_split: its split.
        samples_per_mask: samples per conditioning mask.
        overrides: further overrides (``mask_source``, ``masks_per_real``, ``num_inference_steps``...).
    """
    out = Path(folder) / "synthetic"
    over: dict[str, Any] = {
        "dataset_dir": str(Path(mask_datalist).parent),
        "datalist": mask_datalist,
        "mask_split": mask_split,
        "ckpt_dir": ckpt_dir,
        "output_dir": str(out),
        "samples_per_mask": int(samples_per_mask),
        "seed": int(seed),
        **dict(overrides or {}),
    }
    run_bundle(bundle, list(configs), "run", "infer", over)
    datalist = out / "datalist.json"
    n = len(json.loads(datalist.read_text())["training"])
    if n == 0:
        counts = (
            json.loads((out / "manifest.json").read_text()).get("counts", {})
            if (out / "manifest.json").is_file()
            else {}
        )
        raise RuntimeError(
            f"{bundle}: the generator wrote no pairs to {out} (counts: {counts}); with a quality filter, every sample "
            "was rejected: train the generator longer or loosen the filter (use_quality_filter, quality_*)"
        )
    return {"datalist": str(datalist), "pairs": n, "overrides": _plain(over)}


def train_segmentation(
    bundle: str | os.PathLike,
    configs: Sequence[str],
    datalist: str,
    folder: str | os.PathLike,
    seed: int,
    iterations: int,
    batch_size: int,
    spatial_size: int,
    synthetic_datalist: str | Sequence[str] | None = None,
    synthetic_ratio: float = 0.0,
    synthetic_until: float = 1.0,
    overrides: Mapping[str, Any] | None = None,
    val_split: str = "validation",
    dataset_dir: str | None = None,
) -> dict:
    """Train the segmentation bundle for exactly ``iterations`` iterations (validation once, at the end) and write
    ``segmenter.json`` beside the weights so :func:`~monai_siamese.quality.load_segmenter` loads them by path.

    Args:
        bundle: the segmentation bundle folder.
        configs: its config files.
        datalist: the real datalist (its ``training`` split is trained on).
        folder: output folder (``models/``, ``logs/``).
        seed: seed (weights, augmentation and batch draws).
        iterations: iteration budget.
        batch_size: batch size.
        spatial_size: input size.
        synthetic_datalist: synthetic datalist(s), or None for the real-only arm.
        synthetic_ratio: fraction of every batch that is synthetic.
        synthetic_until: synthetic items only in this first fraction of the run (1: all of it).
        overrides: further overrides.
        val_split: validation split of ``datalist``.
        dataset_dir: base folder of relative paths (default: the datalist's folder).
    """
    from monai_siamese.quality import save_segmenter_spec

    folder = Path(folder)
    epoch_length = divisor_at_most(int(iterations), 100)
    over: dict[str, Any] = {
        "dataset_dir": str(dataset_dir or Path(datalist).parent),
        "datalist": datalist,
        "val_split": val_split,
        **folder_overrides(folder, samples=False),
        "seed": int(seed),
        "num_iterations": int(iterations),
        "epoch_length": epoch_length,
        "val_interval": int(iterations) // epoch_length,
        "checkpoint_interval": max(epoch_length, int(iterations) // 3),
        "batch_size": int(batch_size),
        "spatial_size": [int(spatial_size), int(spatial_size)],
        "synthetic_datalist": synthetic_datalist,
        "synthetic_ratio": float(synthetic_ratio) if synthetic_datalist else 0.0,
        **({"synthetic_until": float(synthetic_until)} if synthetic_datalist and synthetic_until != 1.0 else {}),
        **dict(overrides or {}),
    }
    run_bundle(bundle, list(configs), "run", "train", over)
    save_segmenter_spec(folder / "models", bundle, configs, _plain(over), weights="model_final.pt")
    return {"bundle": str(bundle), "configs": list(configs), "overrides": _plain(over)}
