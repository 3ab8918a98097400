"""Training engines (ignite / MONAI ``SupervisedTrainer``), batch preparation and handlers per method."""

from __future__ import annotations

from monai_siamese.engines.handlers import (
    EMAScheduleState,
    ExportWeightsHandler,
    GradientClipHandler,
    ProgressBarHandler,
    ResumeHandler,
    RNGState,
    SampleGridHandler,
    TerminateOnNanHandler,
    find_latest_checkpoint,
    is_main_process,
    list_checkpoints,
)
from monai_siamese.engines.latent import LatentDiffusionPrepareBatch, train_autoencoder
from monai_siamese.engines.optim import ContiguousAdamW, pack_parameters, packed_base
from monai_siamese.engines.performance import (
    BF16NoScalerHandler,
    CompiledModule,
    ForeachEMAHandler,
    TrainModeCached,
    compile_network,
    fused_adamw_available,
    to_channels_last,
    tune_cpu_allocator,
    unwrap_network,
)
from monai_siamese.engines.prepare_batch import ConditionalDiffusionPrepareBatch, DiffusionLoss
from monai_siamese.engines.siamese import LOSS_KEYS, SiameseDiffusionLoss, SiameseScheduleHandler

__all__ = [
    "ContiguousAdamW",
    "pack_parameters",
    "packed_base",
    "EMAScheduleState",
    "BF16NoScalerHandler",
    "CompiledModule",
    "ForeachEMAHandler",
    "TrainModeCached",
    "compile_network",
    "fused_adamw_available",
    "to_channels_last",
    "tune_cpu_allocator",
    "unwrap_network",
    "ConditionalDiffusionPrepareBatch",
    "DiffusionLoss",
    "ExportWeightsHandler",
    "GradientClipHandler",
    "LatentDiffusionPrepareBatch",
    "ProgressBarHandler",
    "RNGState",
    "ResumeHandler",
    "SampleGridHandler",
    "LOSS_KEYS",
    "SiameseDiffusionLoss",
    "SiameseScheduleHandler",
    "TerminateOnNanHandler",
    "find_latest_checkpoint",
    "is_main_process",
    "list_checkpoints",
    "train_autoencoder",
]
