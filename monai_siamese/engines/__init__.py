"""Training engines (ignite / MONAI ``SupervisedTrainer``), batch preparation and handlers per method."""

from __future__ import annotations

from monai_siamese.engines.handlers import (
    ExportWeightsHandler,
    GradientClipHandler,
    ProgressBarHandler,
    ResumeHandler,
    SampleGridHandler,
    TerminateOnNanHandler,
    find_latest_checkpoint,
    is_main_process,
)
from monai_siamese.engines.prepare_batch import ConditionalDiffusionPrepareBatch

__all__ = [
    "ConditionalDiffusionPrepareBatch",
    "ExportWeightsHandler",
    "GradientClipHandler",
    "ProgressBarHandler",
    "ResumeHandler",
    "SampleGridHandler",
    "TerminateOnNanHandler",
    "find_latest_checkpoint",
    "is_main_process",
]
