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

from monai_siamese.bundles import base_of, bundles_dir, check_bundle, discover_generators, read_config
from monai_siamese.evaluation.config import (
    DATALIST_SOURCE,
    REAL_ARM,
    Arm,
    EvaluationConfig,
    Selection,
    draw_seeds,
    draw_tag,
    run_tag,
    source_tag,
    synthetic_arms,
    training_seeds,
)
from monai_siamese.evaluation.scoring import score_segmentation, select_pairs, synthetic_quality
from monai_siamese.evaluation.steps import (
    cached_step,
    draw_regime,
    sample_generator,
    train_generator,
    train_segmentation,
)
from monai_siamese.utils import atomic_write_json, versions

__all__ = ["run_evaluation", "resolve_config"]


def _log(msg: str) -> None:
    print(f"[evaluate] {time.strftime('%H:%M:%S')} {msg}", flush=True)


def resolve_config(cfg: EvaluationConfig) -> EvaluationConfig:
    """Fill what the settings leave open: the demo datalist, the bundles folder, the methods, class names."""
    from monai_siamese.data import demo_datalist
    from monai_siamese.data.datalist import read_datalist_file

    values: dict[str, Any] = {}
    datalist = cfg.datalist or demo_datalist()
    values["datalist"] = str(Path(datalist).resolve())
    values["bundles_dir"] = str(Path(cfg.bundles_dir or bundles_dir()).resolve())
    methods = cfg.methods if cfg.methods is not None else discover_generators(values["bundles_dir"])
    if not methods:
        raise ValueError(f"no generator bundle found in {values['bundles_dir']}")
    values["methods"] = list(methods)
    if cfg.class_names is None:
        content = read_datalist_file(values["datalist"])
        labels = content.get("labels")
        if isinstance(labels, dict) and len(labels) == cfg.num_classes:
            values["class_names"] = [str(labels[str(i)]) for i in range(1, cfg.num_classes)]
        else:
            values["class_names"] = [f"class{i}" for i in range(1, cfg.num_classes)]
    return cfg.update(values)


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
    from monai_siamese.data import load_datalist
    from monai_siamese.evaluation.report import collect_results, write_report
    from monai_siamese.quality import InceptionFeatures, load_segmenter

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
        out / "config.json",
        {"command": command, "config": cfg.to_dict(), "versions": versions(), "machine": _machine()},
    )
    _log(f"settings in {out / 'config.json'}; methods: {', '.join(cfg.methods)}")
    data_over = _pool_settings(cfg)
    pool = load_datalist(cfg.datalist, cfg.pool_split, cfg.dataset_dir)
    test = load_datalist(cfg.datalist, cfg.test_split, cfg.dataset_dir)
    seg_over = {**cfg.seg_overrides, **data_over}
    seg_common = dict(
        iterations=cfg.seg_iterations,
        batch_size=cfg.seg_batch_size,
        spatial_size=cfg.seg_spatial_size,
        overrides=seg_over,
    )

    # the judge: a segmenter trained on the whole real pool (faithfulness, FID/KID features, a reference row)
    judge_dir = out / "judge"
    _log(f"judge segmenter on the whole pool ({len(pool)} entries)")
    cached_step(
        judge_dir / "train",
        lambda: train_segmentation(
            seg_bundle,
            cfg.seg_configs,
            cfg.datalist,
            judge_dir,
            cfg.seeds[0],
            **{
                **seg_common,
                "iterations": cfg.judge_iterations or cfg.seg_iterations,
                "overrides": {**seg_over, "train_split": cfg.pool_split},
            },
            val_split=cfg.val_split,
            dataset_dir=cfg.dataset_dir,
        ),
        _log,
    )
    judge_model = judge_dir / "models" / "model_final.pt"
    cached_step(judge_dir / "test", lambda: score_segmentation(judge_model, test, cfg.class_names, cfg.device), _log)
    judge = None

    def get_judge():
        nonlocal judge
        if judge is None:
            judge = load_segmenter(judge_model, device=cfg.device)
        return judge

    inception = None
    if cfg.inception_weights:
        inception = InceptionFeatures(cfg.inception_weights, device=cfg.device or "cpu")
    cached_step(
        judge_dir / "real_vs_real",
        lambda: _real_reference(get_judge(), test, pool, cfg, inception),
        _log,
    )

    for n in cfg.regimes:
        for draw_seed in draw_seeds(cfg):
            dtag = draw_tag(n, draw_seed)
            _log(f"regime N={n}, slice draw {draw_seed}")
            draw = cached_step(
                out / "draws" / dtag,
                lambda: draw_regime(
                    pool,
                    n,
                    draw_seed,
                    out / "draws" / dtag,
                    cfg.num_classes,
                    slice_axis=int(seg_over.get("slice_axis", 2)),
                    label_mapping=seg_over.get("label_mapping"),
                    label_threshold=seg_over.get("label_threshold"),
                ),
                _log,
            )
            regime_datalist = draw["datalist"]
            generator_datalist = draw.get("generator_datalist", regime_datalist)
            seeds = training_seeds(cfg, draw_seed)

            def segmentation_arm(arm: str, seed: int, synthetic_datalist: str | None = None) -> Path:
                tag = run_tag(n, draw_seed, seed)
                arm_dir = out / "runs" / arm / tag
                _log(f"segmentation {arm}, N={n}, draw {draw_seed}, seed {seed}")
                cached_step(
                    arm_dir / "train",
                    lambda: train_segmentation(
                        seg_bundle,
                        cfg.seg_configs,
                        regime_datalist,
                        arm_dir,
                        seed,
                        synthetic_datalist=synthetic_datalist,
                        synthetic_ratio=cfg.synthetic_ratio if arm != REAL_ARM else 0.0,
                        **seg_common,
                    ),
                    _log,
                )
                cached_step(
                    arm_dir / "test",
                    lambda: score_segmentation(
                        arm_dir / "models" / "model_final.pt", test, cfg.class_names, cfg.device
                    ),
                    _log,
                )
                return arm_dir

            # the real-only arm first: its segmenter (the draw's N pairs only) also serves generators that filter
            # their samples with a segmenter (MedDiff-FT), so no generator sees more real data than the regime
            real_dirs = [segmentation_arm(REAL_ARM, seed) for seed in seeds]
            trained: dict[str, Path] = {}

            def train_method(method: str) -> Path:
                if method in trained:
                    return trained[method]
                gen_dir = out / "generators" / method / dtag
                over = {**cfg.gen_overrides, **cfg.method_overrides.get(method, {}), **data_over}
                base = base_of(method)
                if base is not None:  # fine-tuning: the base model is trained on the same N pairs first
                    over["pretrained_path"] = str(train_method(base) / "models" / "model.safetensors")
                    over["num_real_pairs"] = None  # every pair of the regime
                _log(f"generator {method}, N={n}, draw {draw_seed}")
                cached_step(
                    gen_dir / "train",
                    lambda: train_generator(
                        bundles / method,
                        cfg.gen_train_configs,
                        generator_datalist,
                        gen_dir,
                        draw_seed,
                        cfg.gen_iterations if base is None else cfg.finetune_iterations,
                        over,
                    ),
                    _log,
                )
                trained[method] = gen_dir
                return gen_dir

            sets: dict[str, str] = {}  # synthetic set name -> datalist
            for method in cfg.methods:  # one generator per regime and draw, trained on the draw's N pairs only
                gen_dir = train_method(method)
                for source in cfg.mask_sources:
                    set_name = Arm(method, source).set_name
                    sample_dir = gen_dir / "sets" / source_tag(source)
                    synth = cached_step(
                        sample_dir / "sample",
                        lambda: sample_generator(
                            bundles / method,
                            cfg.gen_infer_configs,
                            str(gen_dir / "models"),
                            sample_dir,
                            draw_seed,
                            **_sampling_arguments(cfg, method, source, regime_datalist, n, real_dirs[0], data_over),
                        ),
                        _log,
                    )
                    sets[set_name] = synth["datalist"]
                    cached_step(
                        sample_dir / "quality",
                        lambda: synthetic_quality(
                            get_judge(), synth["datalist"], pool, cfg.class_names, cfg.kid_subsets, inception, draw_seed
                        ),
                        _log,
                    )
            arms = synthetic_arms(cfg)
            for arm in arms:  # selections of a set, scored by the draw's real-only segmenter (seed of the draw)
                if arm.selection == Selection.NONE.value:
                    continue
                sel_dir = out / "generators" / arm.method / dtag / "sets" / source_tag(arm.mask_source) / arm.selection
                res = cached_step(
                    sel_dir,
                    lambda: select_pairs(
                        real_dirs[0] / "models" / "model_final.pt",
                        sets[arm.set_name],
                        sel_dir,
                        arm.selection,
                        cfg.selection_dice,
                        cfg.selection_fraction,
                        cfg.device,
                    ),
                    _log,
                )
                sets[arm.name] = res["datalist"]
            for seed in seeds:  # every arm: same slices, same seed, same budget
                for arm in arms:
                    segmentation_arm(arm.name, seed, sets[arm.name] if arm.name in sets else sets[arm.set_name])
    results = collect_results(out, cfg)
    report = write_report(out, cfg, results, command, wall_seconds=time.time() - t_start)
    _log(f"report: {report}")
    return {"report": report, "results": results}


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
        over.update(num_real_pairs=None, num_pairs=num_real * cfg.samples_per_mask, segmenter_path=str(real_dir / "models"))
    return {
        "mask_datalist": mask_datalist,
        "mask_split": mask_split,
        "samples_per_mask": samples_per_mask,
        "overrides": over,
    }


def _real_reference(judge: Any, test: Sequence[dict], pool: Sequence[dict], cfg: EvaluationConfig, inception) -> dict:
    """FID/KID between two real sets (the test slab vs the pool), at the synthetic images' size: the value
    different real anatomy gives, for scale. Uses the size of the generators' output (first method, if sampled)."""
    from monai_siamese.evaluation.scoring import load_images
    from monai_siamese.quality import frechet_distance, kernel_inception_distance

    size = _generator_size(cfg)
    real_test = load_images(judge.settings, test, spatial_size=size)
    real_pool = load_images(judge.settings, pool, spatial_size=size)
    f_test, f_pool = judge.features(real_test["image"]), judge.features(real_pool["image"])
    kid, kid_std = kernel_inception_distance(f_pool, f_test, num_subsets=cfg.kid_subsets)
    out = {"fid": frechet_distance(f_pool, f_test), "kid": kid, "kid_std": kid_std, "image_size": list(size)}
    out["sets"] = {"test": len(test), "pool": len(pool)}
    if inception is not None:
        i_test, i_pool = inception(real_test["image"]), inception(real_pool["image"])
        out["fid_inception"] = frechet_distance(i_pool, i_test)
        out["kid_inception"] = kernel_inception_distance(i_pool, i_test, num_subsets=cfg.kid_subsets)[0]
    return out


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
