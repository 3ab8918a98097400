"""Quality assessment of generated pairs with a segmenter trained on real data: faithfulness (Dice against the
conditioning mask), FID/KID on the segmenter's pooled encoder features (or a user-supplied Inception), diversity
(MS-SSIM between samples of one mask). The building blocks of the MedDiff-FT quality filter."""

from __future__ import annotations

from monai_siamese.quality.consistency import (
    SimilarityRegion,
    adjacent_slice_similarity,
    consistency_gap,
    reformat_figure,
    volume_consistency,
)
from monai_siamese.quality.faithfulness import faithfulness_dice, nanmean_per_class, per_class_scores
from monai_siamese.quality.fidelity import (
    MS_SSIM_WEIGHTS,
    InceptionFeatures,
    frechet_distance,
    kernel_inception_distance,
    mean_pairwise_ms_ssim,
    ms_ssim_kernel_size,
    ms_ssim_settings,
)
from monai_siamese.quality.filter import (
    FeatureSpaceQualityFilter,
    QualityTest,
    build_quality_filter,
    class_means,
    per_class_dice,
)
from monai_siamese.quality.segmenter import (
    SPEC_FILE,
    FeaturePool,
    Segmenter,
    SegmenterSettings,
    default_feature_layers,
    encoder_features,
    load_segmenter,
    save_segmenter_spec,
)

__all__ = [
    "SimilarityRegion",
    "adjacent_slice_similarity",
    "consistency_gap",
    "reformat_figure",
    "volume_consistency",
    "MS_SSIM_WEIGHTS",
    "SPEC_FILE",
    "FeaturePool",
    "FeatureSpaceQualityFilter",
    "InceptionFeatures",
    "QualityTest",
    "Segmenter",
    "SegmenterSettings",
    "build_quality_filter",
    "class_means",
    "default_feature_layers",
    "encoder_features",
    "faithfulness_dice",
    "frechet_distance",
    "kernel_inception_distance",
    "load_segmenter",
    "mean_pairwise_ms_ssim",
    "ms_ssim_kernel_size",
    "ms_ssim_settings",
    "nanmean_per_class",
    "per_class_dice",
    "per_class_scores",
    "save_segmenter_spec",
]
