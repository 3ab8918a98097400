"""Batch preparation and the loss for conditional diffusion training on MONAI's ``SupervisedTrainer``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from monai.engines.utils import DiffusionPrepareBatch
from torch import nn

from monai_siamese.diffusion import PredictionType, diffusion_target, is_flow, min_snr_weight

__all__ = ["ConditionalDiffusionPrepareBatch", "DiffusionLoss"]


class ConditionalDiffusionPrepareBatch(DiffusionPrepareBatch):
    """MONAI's ``DiffusionPrepareBatch`` for our objectives: DDPM (integer timesteps, the noise / velocity / sample
    target) or rectified flow (timesteps from the flow scheduler's ``sample_timesteps``, the target ``x0 - noise``),
    with the conditioning ``mode`` passed to ``DiffusionInferer``, an optional batch-level transform of the condition
    (e.g. per-batch mask ablation), optional min-SNR loss weights and, for the Siamese-Diffusion inferer, the image
    its hint is made from.

    ``SupervisedTrainer`` calls ``inferer(images, network, noise=..., timesteps=..., condition=..., mode=...)`` and
    the loss on ``(prediction, target)``; with ``min_snr_gamma`` the target is ``(target, weights)`` for
    :class:`DiffusionLoss`.

    Args:
        num_train_timesteps: training timesteps of the scheduler.
        condition_name: batch key of the encoded condition.
        mode: ``concat`` (segmentation-guided) or ``crossattn``.
        batch_transform: callable applied to the batched condition on the device.
        prediction_type: the network's target: ``epsilon`` (the noise, the reference's), ``v_prediction``,
            ``sample`` or ``flow`` (rectified flow; the scheduler must be a flow scheduler).
        scheduler: the training scheduler (needed for ``v_prediction``, rectified flow and min-SNR weights).
        min_snr_gamma: min-SNR-gamma loss weighting (DDPM only; None: off).
        hint_image_key: batch key of the image passed to the inferer as ``image_hint_source`` (None: not passed).
    """

    def __init__(
        self,
        num_train_timesteps: int,
        condition_name: str | None = "cond",
        mode: str = "concat",
        batch_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        prediction_type: str = "epsilon",
        scheduler: Any = None,
        min_snr_gamma: float | None = None,
        hint_image_key: str | None = None,
    ) -> None:
        super().__init__(num_train_timesteps=num_train_timesteps, condition_name=condition_name)
        self.prediction_type = PredictionType(prediction_type).value
        flow = self.prediction_type == PredictionType.FLOW.value
        if (flow or self.prediction_type == PredictionType.V_PREDICTION.value or min_snr_gamma) and scheduler is None:
            raise ValueError(
                f"prediction_type={self.prediction_type!r} / min-SNR weighting need the training scheduler"
            )
        if scheduler is not None and flow != is_flow(scheduler):
            raise ValueError(f"prediction_type={self.prediction_type!r} does not fit {type(scheduler).__name__}")
        if min_snr_gamma and flow:
            raise ValueError("min-SNR weighting is for the DDPM objective, not rectified flow")
        self.mode = mode
        self.batch_transform = batch_transform
        self.scheduler = scheduler
        self.min_snr_gamma = min_snr_gamma
        self.hint_image_key = hint_image_key

    def get_timesteps(self, images: torch.Tensor) -> torch.Tensor:
        if self.scheduler is not None and is_flow(self.scheduler):
            return self.scheduler.sample_timesteps(images)
        return super().get_timesteps(images)

    def get_target(self, images: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        return diffusion_target(self.scheduler, images, noise, timesteps, self.prediction_type)

    def __call__(
        self,
        batchdata: Mapping[str, torch.Tensor],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, Any, tuple, dict]:
        # plain tensors: MetaTensor dispatch on every network op costs more than the convolutions on small inputs
        batchdata = {k: (v.as_tensor() if hasattr(v, "as_tensor") else v) for k, v in batchdata.items()}
        images, target, args, infer_kwargs = super().__call__(batchdata, device, non_blocking, **kwargs)
        if "condition" in infer_kwargs and self.batch_transform is not None:
            infer_kwargs["condition"] = self.batch_transform(infer_kwargs["condition"])
        infer_kwargs["mode"] = self.mode
        if self.hint_image_key is not None:
            infer_kwargs["image_hint_source"] = batchdata[self.hint_image_key].to(device, non_blocking=non_blocking)
        if self.min_snr_gamma:
            t = infer_kwargs["timesteps"]
            target = (target, min_snr_weight(self.scheduler, t, self.min_snr_gamma, self.prediction_type))
        return images, target, args, infer_kwargs


class DiffusionLoss(nn.Module):
    """Mean squared error between the network's prediction and its target, optionally weighted per sample
    (``target`` given as ``(target, weights)`` by :class:`ConditionalDiffusionPrepareBatch` with min-SNR weights).

    Equal to ``torch.nn.MSELoss`` without weights.
    """

    def forward(
        self, prediction: torch.Tensor, target: torch.Tensor | tuple[torch.Tensor, torch.Tensor]
    ) -> torch.Tensor:
        weights = None
        if isinstance(target, (tuple, list)):
            target, weights = target
        per_sample = (prediction.float() - target.float()).pow(2).flatten(1).mean(1)
        if weights is not None:
            per_sample = per_sample * weights.to(per_sample)
        return per_sample.mean()
