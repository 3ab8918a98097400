"""Downstream evaluation: the segmentation bundle trained on real vs real + synthetic data in low-data regimes,
with faithfulness, FID/KID and MS-SSIM of the synthetic sets, written as ``report.md`` with tables and figures.

Entry point: ``python -m monai_siamese evaluate --preset demo --out DIR`` (:func:`run_evaluation`).
"""

from __future__ import annotations

from monai_siamese.evaluation.config import (
    REAL_ARM,
    Arm,
    EvaluationConfig,
    Preset,
    Selection,
    preset_config,
    source_tag,
    synthetic_arms,
)
from monai_siamese.evaluation.protocol import resolve_config, run_evaluation
from monai_siamese.evaluation.report import collect_results, mean_std, plot_dice_bars, sample_grid, write_report
from monai_siamese.evaluation.scoring import score_segmentation, select_pairs, synthetic_quality
from monai_siamese.evaluation.steps import (
    cached_step,
    divisor_at_most,
    draw_regime,
    sample_generator,
    train_generator,
    train_segmentation,
)

__all__ = [
    "REAL_ARM",
    "EvaluationConfig",
    "Arm",
    "Selection",
    "Preset",
    "cached_step",
    "collect_results",
    "divisor_at_most",
    "draw_regime",
    "mean_std",
    "plot_dice_bars",
    "preset_config",
    "source_tag",
    "synthetic_arms",
    "select_pairs",
    "resolve_config",
    "run_evaluation",
    "sample_generator",
    "sample_grid",
    "synthetic_quality",
    "score_segmentation",
    "train_generator",
    "train_segmentation",
    "write_report",
]
