"""Quality assessment of generated pairs: segmenter faithfulness, feature-space filters, fidelity metrics."""

from __future__ import annotations

from monai_siamese.quality.filter import (
    FeatureSpaceQualityFilter,
    QualityTest,
    build_quality_filter,
    class_means,
    per_class_dice,
)

__all__ = ["FeatureSpaceQualityFilter", "QualityTest", "build_quality_filter", "class_means", "per_class_dice"]
