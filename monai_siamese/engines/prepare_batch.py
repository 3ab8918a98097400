"""Batch preparation for conditional diffusion training on MONAI's ``SupervisedTrainer``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from monai.engines.utils import DiffusionPrepareBatch

__all__ = ["ConditionalDiffusionPrepareBatch"]


class ConditionalDiffusionPrepareBatch(DiffusionPrepareBatch):
    """MONAI's ``DiffusionPrepareBatch`` with the conditioning ``mode`` passed to ``DiffusionInferer`` and an
    optional batch-level transform of the condition (e.g. per-batch mask ablation).

    ``SupervisedTrainer`` calls ``inferer(images, network, noise=..., timesteps=..., condition=..., mode=...)`` and
    the loss on ``(prediction, noise)``.

    Args:
        num_train_timesteps: training timesteps of the scheduler.
        condition_name: batch key of the encoded condition.
        mode: ``concat`` (segmentation-guided) or ``crossattn``.
        batch_transform: callable applied to the batched condition on the device.
        prediction_type: the network's target: ``epsilon`` (the noise, the reference's), ``v_prediction``
            (velocity, as MONAI's ``VPredictionPrepareBatch``) or ``sample`` (the clean image).
        scheduler: the training scheduler (needed for ``v_prediction``).
    """

    def __init__(
        self,
        num_train_timesteps: int,
        condition_name: str | None = "cond",
        mode: str = "concat",
        batch_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        prediction_type: str = "epsilon",
        scheduler: Any = None,
    ) -> None:
        super().__init__(num_train_timesteps=num_train_timesteps, condition_name=condition_name)
        if prediction_type not in ("epsilon", "v_prediction", "sample"):
            raise ValueError(f"prediction_type must be epsilon, v_prediction or sample, got {prediction_type!r}")
        if prediction_type == "v_prediction" and scheduler is None:
            raise ValueError("prediction_type='v_prediction' needs the training scheduler")
        self.mode = mode
        self.batch_transform = batch_transform
        self.prediction_type = prediction_type
        self.scheduler = scheduler

    def get_target(self, images: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        if self.prediction_type == "v_prediction":
            return self.scheduler.get_velocity(images, noise, timesteps)
        if self.prediction_type == "sample":
            return images
        return noise

    def __call__(
        self,
        batchdata: Mapping[str, torch.Tensor],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor, tuple, dict]:
        # plain tensors: MetaTensor dispatch on every network op costs more than the convolutions on small inputs
        batchdata = {k: (v.as_tensor() if hasattr(v, "as_tensor") else v) for k, v in batchdata.items()}
        images, target, args, infer_kwargs = super().__call__(batchdata, device, non_blocking, **kwargs)
        if "condition" in infer_kwargs and self.batch_transform is not None:
            infer_kwargs["condition"] = self.batch_transform(infer_kwargs["condition"])
        infer_kwargs["mode"] = self.mode
        return images, target, args, infer_kwargs
