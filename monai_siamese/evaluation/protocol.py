"""The downstream evaluation protocol: does synthetic data raise segmentation Dice where real annotations are
scarce?

For every regime N (real training slices) and seed s:

1. draw N real slices from the pool with seed s (:func:`~monai_siamese.evaluation.steps.draw_regime`): every arm
   of (N, s) uses exactly these slices;
2. for every generator method: train the generator on those N pairs only, then, for every mask source
   (:mod:`monai_siamese.masks`: the N real masks, or new masks made from them only), sample a set of
   ``samples_per_mask`` pairs per real mask; optionally select pairs of a set with the draw's real-only segmenter
   (:class:`~monai_siamese.evaluation.config.Selection`);
3. train the segmentation bundle on the N real slices (arm ``real``) and on the N real slices + each set
   (a fixed fraction of every batch, same iterations, same seed);
4. score every arm on the held-out real test split, which no generator saw.

Once per evaluation a *judge* segmenter is trained on the whole real pool; it scores every synthetic set
(faithfulness Dice, FID/KID on its encoder features, MS-SSIM diversity). Every run writes its own
``result.json``; an interrupted evaluation resumes where it stopped. The report is written by
:func:`~monai_siamese.evaluation.report.write_report`.
"""

from __future__ import annotations

import os
import platform
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from monai_siamese.bundles import base_of, bundles_dir, check_bundle, discover_generators, read_config, spec
from monai_siamese.evaluation.config import (
    DATALIST_SOURCE,
    REAL_ARM,
    Arm,
    ConfigError,
    EvaluationConfig,
    Selection,
    draw_seeds,
    draw_tag,
    run_tag,
    source_tag,
    synthetic_arms,
    training_seeds,
)
from monai_siamese.evaluation.runner import Task, default_workers, run_tasks
from monai_siamese.evaluation.scoring import real_reference, select_pairs
from monai_siamese.evaluation.steps import CONFIG_FILE, cached_step, draw_regime
from monai_siamese.evaluation.tasks import log_progress as _log
from monai_siamese.utils import atomic_write_json, versions

__all__ = ["run_evaluation", "resolve_config", "class_names_from_datalist"]

TASKS = "monai_siamese.evaluation.tasks"  # the module of the tasks run in worker processes


def resolve_config(cfg: EvaluationConfig) -> EvaluationConfig:
    """Fill what the settings leave open: the demo datalist, the bundles folder, the methods, class names."""
    from monai_siamese.data import demo_datalist

    values: dict[str, Any] = {}
    datalist = cfg.datalist or demo_datalist()
    values["datalist"] = str(Path(datalist).resolve())
    values["bundles_dir"] = str(Path(cfg.bundles_dir or bundles_dir()).resolve())
    methods = cfg.methods if cfg.methods is not None else discover_generators(values["bundles_dir"])
    if not methods:
        raise ValueError(f"no generator bundle found in {values['bundles_dir']}")
    values["methods"] = list(methods)
    for method, base in cfg.warm_starts.items():
        if method not in methods or base not in methods or method == base or base_of(method) is not None or (
            base_generator(cfg, base) is not None
        ):
            raise ConfigError(
                f"warm_starts {method!r} <- {base!r}: both must be evaluated methods ({', '.join(methods)}), the base "
                "one trained from scratch, the other without a base of its own (MedDiff-FT fine-tunes seg-guided)"
            )
    if cfg.class_names is None:
        values["class_names"] = class_names_from_datalist(values["datalist"], cfg.num_classes)
    return cfg.update(values)


def base_generator(cfg: EvaluationConfig, method: str) -> str | None:
    """The generator ``method`` starts from in the evaluation (a warm start of ``cfg``, or its bundle's base), or
    None (trained from scratch)."""
    return cfg.warm_starts.get(method) or base_of(method)


def class_names_from_datalist(datalist: str | os.PathLike, num_classes: int) -> list[str]:
    """Names of the foreground classes: the datalist's ``labels`` when it names all ``num_classes`` classes, else
    ``class1``, ``class2``..."""
    from monai_siamese.data.datalist import read_datalist_file

    labels = read_datalist_file(datalist).get("labels")
    if isinstance(labels, dict) and len(labels) == num_classes:
        return [str(labels[str(i)]) for i in range(1, num_classes)]
    return [f"class{i}" for i in range(1, num_classes)]


def _pool_settings(cfg: EvaluationConfig) -> dict[str, Any]:
    """The data settings shared by every bundle run (label mapping, preset...), from the segmentation overrides."""
    keys = ("num_classes", "preset", "ct_window", "mr_percentiles", "label_mapping", "label_threshold", "slice_axis")
    over = {k: cfg.seg_overrides[k] for k in keys if k in cfg.seg_overrides}
    over["num_classes"] = cfg.num_classes
    return over


def run_evaluation(cfg: EvaluationConfig, out: str | os.PathLike, argv: Sequence[str] | None = None) -> dict:
    """Run (or resume) the whole protocol into ``out`` and write ``report.md``, ``results.json`` and figures.

    Args:
        cfg: the settings (see :func:`~monai_siamese.evaluation.config.preset_config`).
        out: output folder.
        argv: the command line, recorded in the report.
    """
    from monai_siamese.data import load_datalist, validate_or_raise
    from monai_siamese.evaluation.report import collect_results, write_report
    from monai_siamese.quality import load_segmenter

    t_start = time.time()
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    cfg = resolve_config(cfg)
    bundles = Path(cfg.bundles_dir)
    seg_bundle = bundles / cfg.segmentation_bundle
    for m in cfg.methods:
        check_bundle(bundles / m, sorted({*cfg.gen_train_configs, *cfg.gen_infer_configs}))
    command = "python -m monai_siamese " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    atomic_write_json(
        out / CONFIG_FILE,
        {"command": command, "config": cfg.to_dict(), "versions": versions(), "machine": _machine()},
    )
    _log(f"settings in {out / CONFIG_FILE}; methods: {', '.join(cfg.methods)}")
    data_over = _pool_settings(cfg)
    pool = load_datalist(cfg.datalist, cfg.pool_split, cfg.dataset_dir)
    test = load_datalist(cfg.datalist, cfg.test_split, cfg.dataset_dir)
    # every file of the pool and the test split is checked before anything trains: all problems at once, by file
    validate_or_raise(
        pool + test,
        cfg.num_classes,
        label_mapping=data_over.get("label_mapping"),
        label_threshold=data_over.get("label_threshold"),
    )
    seg_over = {**cfg.seg_overrides, **data_over}
    seg_common = dict(
        iterations=cfg.seg_iterations,
        batch_size=cfg.seg_batch_size,
        spatial_size=cfg.seg_spatial_size,
        overrides=seg_over,
    )

    workers = cfg.workers or default_workers()
    tasks_of = lambda ts: run_tasks(ts, workers, log=_log)  # noqa: E731
    judge_dir = out / "judge"
    judge_model = judge_dir / "models" / "model_final.pt"
    seg_run = dict(
        bundle=str(seg_bundle),
        configs=list(cfg.seg_configs),
        test=list(test),
        class_names=list(cfg.class_names),
        device=cfg.device,
        common=seg_common,
    )

    # 1. the slice draws: every arm and generator of a regime and draw uses exactly these N pairs
    draws: dict[tuple[int, int], dict] = {}
    for n in cfg.regimes:
        for d in draw_seeds(cfg):
            folder = out / "draws" / draw_tag(n, d)
            draws[(n, d)] = cached_step(
                folder,
                lambda: draw_regime(
                    pool,
                    n,
                    d,
                    folder,
                    cfg.num_classes,
                    **_slicing(seg_over),
                ),
                _log,
                settings={"pool": pool, "n": n, "d": d, "num_classes": cfg.num_classes, **_slicing(seg_over)},
                outputs=[folder / "slices"],
            )
    runs = [(n, d, seed) for (n, d) in draws for seed in training_seeds(cfg, d)]

    def seg_task(arm: str, n: int, d: int, seed: int, synthetic: str | None = None, made_by: Any = None) -> Task:
        return Task(
            f"{TASKS}:segmentation_run",
            {
                **seg_run,
                "folder": str(out / "runs" / arm / run_tag(n, d, seed)),
                "datalist": draws[(n, d)]["datalist"],
                "seed": seed,
                "synthetic_datalist": synthetic,
                "synthetic_ratio": cfg.synthetic_ratio if synthetic else 0.0,
                "synthetic_until": cfg.synthetic_until if synthetic else 1.0,
                "after": [str(out / "draws" / draw_tag(n, d)), *([str(made_by)] if made_by else [])],
            },
            f"segmentation {arm} {run_tag(n, d, seed)}",
        )

    # 2. the judge (whole real pool) and the real-only arms; a draw's real-only segmenter (seed = draw's first) also
    # scores its generators' pairs (MedDiff-FT's filter, the selections): no generator sees more real data
    judge_task = Task(
        f"{TASKS}:segmentation_run",
        {
            **seg_run,
            "folder": str(judge_dir),
            "datalist": cfg.datalist,
            "seed": cfg.seeds[0],
            "val_split": cfg.val_split,
            "dataset_dir": cfg.dataset_dir,
            "common": {
                **seg_common,
                "iterations": cfg.judge_iterations or cfg.seg_iterations,
                "overrides": {**seg_over, "train_split": cfg.pool_split},
            },
        },
        "judge segmenter on the whole pool",
    )
    _log(f"judge segmenter on the whole pool ({len(pool)} entries) and {len(runs)} real-only segmentation runs")
    tasks_of([judge_task, *[seg_task(REAL_ARM, n, d, seed) for n, d, seed in runs]])
    real_dir = {(n, d): out / "runs" / REAL_ARM / run_tag(n, d, training_seeds(cfg, d)[0]) for n, d in draws}

    # 3. generators, one per regime and draw, trained on the draw's N pairs only; fine-tuners after their base
    def gen_dir(method: str, n: int, d: int) -> Path:
        return out / "generators" / method / draw_tag(n, d)

    for stage in (False, True):
        tasks = []
        for method in [m for m in cfg.methods if (base_generator(cfg, m) is not None) == stage]:
            for n, d in draws:
                over = {**cfg.gen_overrides, **cfg.method_overrides.get(method, {}), **data_over}
                if stage:  # fine-tuning / warm start: the base model of the same draw
                    weights = gen_dir(base_generator(cfg, method), n, d) / "models" / "model.safetensors"
                    over[spec(method).pretrained_key] = str(weights)
                if base_of(method) is not None:  # MedDiff-FT: every pair of the regime
                    over["num_real_pairs"] = None
                iterations = cfg.finetune_iterations if stage else cfg.gen_iterations
                tasks.append(
                    Task(
                        f"{TASKS}:generator_run",
                        {
                            "folder": str(gen_dir(method, n, d)),
                            "bundle": str(bundles / method),
                            "configs": list(cfg.gen_train_configs),
                            "datalist": draws[(n, d)]["generator_datalist"],
                            "seed": d,
                            "iterations": iterations,
                            "overrides": over,
                            "after": [
                                str(out / "draws" / draw_tag(n, d)),
                                *([str(gen_dir(base_generator(cfg, method), n, d) / "train")] if stage else []),
                            ],
                        },
                        f"generator {method} {draw_tag(n, d)}",
                    )
                )
        _log(f"{len(tasks)} generator trainings" + (" (fine-tuning their base generators)" if stage else ""))
        tasks_of(tasks)

    # 4. one synthetic set per generator and mask source (new masks from the draw's N masks only), judged
    tasks, sets, made_by = [], {}, {}
    for n, d in draws:
        for method in cfg.methods:
            for source in cfg.mask_sources:
                folder = gen_dir(method, n, d) / "sets" / source_tag(source)
                sets[(n, d, Arm(method, source).set_name)] = str(folder / "synthetic" / "datalist.json")
                made_by[(n, d, Arm(method, source).set_name)] = folder / "sample"
                kw = _sampling_arguments(cfg, method, source, draws[(n, d)]["datalist"], n, real_dir[(n, d)], data_over)
                tasks.append(
                    Task(
                        f"{TASKS}:sampling_run",
                        {
                            "folder": str(folder),
                            "bundle": str(bundles / method),
                            "configs": list(cfg.gen_infer_configs),
                            "ckpt_dir": str(gen_dir(method, n, d) / "models"),
                            "seed": d,
                            "sampling": kw,
                            "judge": str(judge_model),
                            "pool": list(pool),
                            "class_names": list(cfg.class_names),
                            "kid_subsets": cfg.kid_subsets,
                            "inception_weights": cfg.inception_weights,
                            "device": cfg.device,
                            "after": [  # the generator; the real-only segmenter of a quality filter
                                str(gen_dir(method, n, d) / "train"),
                                *([str(real_dir[(n, d)] / "train")] if "segmenter_path" in kw["overrides"] else []),
                            ],
                        },
                        f"sampling {method} on {source} masks {draw_tag(n, d)}",
                    )
                )
    _log(f"{len(tasks)} synthetic sets")
    tasks_of(tasks)
    size = _generator_size(cfg)
    cached_step(
        judge_dir / "real_vs_real",
        lambda: real_reference(
            load_segmenter(judge_model, device=cfg.device), test, pool, size, cfg.class_names,
            cfg.kid_subsets, _inception(cfg),
        ),
        _log,
        # the reference at the generated size; `valid` also for references stored before steps recorded settings
        valid=lambda r: list(r.get("image_size", [])) == list(size),
        settings={"test": test, "pool": pool, "size": size, "kid": cfg.kid_subsets, "inception": cfg.inception_weights},
        after=[judge_dir / "train"],
    )

    # 5. selections of the non-regime sets, scored by the draw's real-only segmenter
    arms = synthetic_arms(cfg)
    for n, d in draws:
        for arm in [a for a in arms if a.selection != Selection.NONE.value]:
            folder = gen_dir(arm.method, n, d) / "sets" / source_tag(arm.mask_source) / arm.selection
            res = cached_step(
                folder,
                lambda: select_pairs(
                    real_dir[(n, d)] / "models" / "model_final.pt",
                    sets[(n, d, arm.set_name)],
                    folder,
                    arm.selection,
                    cfg.selection_dice,
                    cfg.selection_fraction,
                    cfg.device,
                ),
                _log,
                settings={"mode": arm.selection, "dice": cfg.selection_dice, "fraction": cfg.selection_fraction},
                after=[made_by[(n, d, arm.set_name)], real_dir[(n, d)] / "train"],
            )
            sets[(n, d, arm.name)], made_by[(n, d, arm.name)] = res["datalist"], folder

    # 6. every synthetic arm: same slices, same seeds, same budget as the real-only arm
    tasks = [
        seg_task(arm.name, n, d, seed, sets[(n, d, arm.name)], made_by[(n, d, arm.name)])
        for n, d, seed in runs
        for arm in arms
    ]
    _log(f"{len(tasks)} real + synthetic segmentation runs")
    tasks_of(tasks)
    results = collect_results(out, cfg)
    report = write_report(out, cfg, results, command, wall_seconds=time.time() - t_start)
    _log(f"report: {report}")
    return {"report": report, "results": results}


def _slicing(seg_over: dict[str, Any]) -> dict[str, Any]:
    """The segmentation overrides a slice draw depends on."""
    return {
        "slice_axis": int(seg_over.get("slice_axis", 2)),
        "label_mapping": seg_over.get("label_mapping"),
        "label_threshold": seg_over.get("label_threshold"),
    }


def _inception(cfg: EvaluationConfig) -> Any:
    from monai_siamese.quality import InceptionFeatures

    return InceptionFeatures(cfg.inception_weights, device=cfg.device or "cpu") if cfg.inception_weights else None


def _sampling_arguments(
    cfg: EvaluationConfig,
    method: str,
    source: str,
    regime_datalist: str,
    num_real: int,
    real_dir: Path,
    data_over: dict[str, Any],
) -> dict[str, Any]:
    """Arguments of :func:`sample_generator` for one set: the conditioning masks (the regime's, or a mask source's
    new masks made from them only), ``samples_per_mask`` pairs per real mask in every set, and for MedDiff-FT the
    regime's pairs as canvases and the draw's real-only segmenter for its quality filter."""
    over = {**cfg.gen_infer_overrides, **cfg.method_overrides.get(method, {}), **data_over}
    over["mask_options"] = cfg.mask_options
    mask_datalist, mask_split = regime_datalist, "training"
    if source == DATALIST_SOURCE:
        if not cfg.mask_datalist:
            raise ValueError("mask source 'datalist' needs mask_datalist")
        mask_datalist, mask_split, source = str(cfg.mask_datalist), cfg.mask_split, "regime"
    over["mask_source"] = source
    samples_per_mask = cfg.samples_per_mask if source == "regime" else 1
    over["masks_per_real"] = cfg.samples_per_mask
    if base_of(method) is not None:  # canvases = the regime's pairs; as many pairs as the other methods
        over.update(
            num_real_pairs=None, num_pairs=num_real * cfg.samples_per_mask, segmenter_path=str(real_dir / "models")
        )
    return {
        "mask_datalist": mask_datalist,
        "mask_split": mask_split,
        "samples_per_mask": samples_per_mask,
        "overrides": over,
    }


def _generator_size(cfg: EvaluationConfig) -> tuple[int, int]:
    """The generators' output size, from the first method's configs (``spatial_size``) and overrides."""
    method = cfg.methods[0]
    if "spatial_size" in cfg.gen_infer_overrides:
        size = cfg.gen_infer_overrides["spatial_size"]
    else:
        size = read_config(Path(cfg.bundles_dir) / method, cfg.gen_infer_configs).get(
            "spatial_size", [cfg.seg_spatial_size] * 2
        )
    size = [size, size] if isinstance(size, int) else list(size)
    return int(size[0]), int(size[1])


def _machine() -> dict[str, Any]:
    import torch

    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        info["load_average_at_start"] = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        pass
    return info
