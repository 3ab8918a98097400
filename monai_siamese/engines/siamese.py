"""Siamese-Diffusion training: the image hint, the four loss terms and a ``SupervisedTrainer`` whose iteration runs
both branches (Qiu et al., arXiv 2505.06068)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from enum import Enum
from typing import Any

import torch
import torch.nn.functional as F
from monai.engines import SupervisedTrainer
from monai.engines.utils import IterationEvents
from monai.utils.enums import CommonKeys as Keys
from torch import nn
from torch.optim import Optimizer

from monai_siamese.engines.performance import unwrap_network
from monai_siamese.engines.prepare_batch import ConditionalDiffusionPrepareBatch
from monai_siamese.networks.siamese import SiameseDiffusionNetwork

__all__ = ["ImageHint", "make_image_hint", "SiameseDiffusionLoss", "SiameseDiffusionTrainer", "LOSS_KEYS"]

#: the loss terms stored in the engine output (``loss`` is their weighted sum)
LOSS_KEYS = ("loss", "loss_mask", "loss_img", "loss_nc", "loss_oa")


class ImageHint(str, Enum):
    """How the image becomes a hint with the mask hint's channel count."""

    REPEAT = "repeat"  # the image channels tiled (a 1-channel image is repeated C times)
    PAD = "pad"  # the image channels, then zero channels


def make_image_hint(
    images: torch.Tensor, channels: int, mode: ImageHint | str = ImageHint.REPEAT, size: Sequence[int] | None = None
) -> torch.Tensor:
    """The image as a ControlNet hint: mapped from [-1, 1] to [0, 1] (the range of a one-hot mask hint, as the
    reference maps its images), matched to ``channels`` and resized to ``size`` (the mask hint's) if it differs.

    Args:
        images: ``(B, C_img, *spatial)`` in [-1, 1].
        channels: hint channels of the ControlNet.
        mode: :class:`ImageHint`.
        size: spatial size of the hint (default: the images').
    """
    hint = (images.float() + 1.0) / 2.0
    c = hint.shape[1]
    if ImageHint(mode) == ImageHint.REPEAT:
        hint = hint.repeat(1, -(-channels // c), *([1] * (hint.ndim - 2)))[:, :channels]
    elif c >= channels:
        hint = hint[:, :channels]
    else:
        hint = torch.cat([hint, hint.new_zeros((hint.shape[0], channels - c, *hint.shape[2:]))], dim=1)
    if size is not None and tuple(size) != tuple(hint.shape[2:]):
        hint = F.interpolate(hint, size=tuple(size), mode="bilinear" if hint.ndim == 4 else "trilinear")
    return hint


def _per_sample_mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.float() - b.float()).pow(2).flatten(1).mean(1)


class SiameseDiffusionLoss(nn.Module):
    """The Siamese-Diffusion objective (Qiu et al., Noise-Consistent Siamese-Diffusion for Medical Image Synthesis and
    Segmentation, arXiv 2505.06068): ``w_mask L_mask + w_img L_img + w_nc L_nc + w_oa L_oa`` with

    - ``L_mask = ||eps_m - eps||²`` (Mask-Diffusion),
    - ``L_img = ||eps_i - eps||²`` (Image-Diffusion),
    - ``L_nc = ||eps_m - sg(eps_i)||²`` (noise consistency: pulls Mask-Diffusion towards Image-Diffusion only),
    - ``L_oa = ||eps_oa - eps||²`` over the augmented samples, summed over them and divided by the batch size (as the
      reference's per-sample weights, 0 for the others); 0 when there are none.

    Each term is the mean over its samples of the per-sample mean squared error. A weight of 0 turns a term off (it is
    still reported).

    Args:
        mask_weight: weight of L_mask.
        image_weight: weight of L_img.
        nc_weight: weight of L_nc.
        oa_weight: weight of L_oa.
    """

    def __init__(
        self, mask_weight: float = 1.0, image_weight: float = 1.0, nc_weight: float = 1.0, oa_weight: float = 1.0
    ) -> None:
        super().__init__()
        self.mask_weight = mask_weight
        self.image_weight = image_weight
        self.nc_weight = nc_weight
        self.oa_weight = oa_weight

    def forward(self, outputs: Mapping[str, torch.Tensor], target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Args:
            outputs: what :class:`~monai_siamese.networks.SiameseDiffusionNetwork` returns.
            target: the regression target of ``pred_mask`` / ``pred_image``.

        Returns:
            the terms of :data:`LOSS_KEYS` (``loss`` with its graph, the terms unweighted).
        """
        pred_m = outputs["pred_mask"]
        zero = pred_m.new_zeros((), dtype=torch.float32)
        terms = {"loss_mask": _per_sample_mse(pred_m, target).mean()}
        pred_i = outputs.get("pred_image")
        terms["loss_img"] = _per_sample_mse(pred_i, target).mean() if pred_i is not None else zero
        terms["loss_nc"] = _per_sample_mse(pred_m, pred_i.detach()).mean() if pred_i is not None else zero
        if outputs.get("pred_oa") is not None:
            terms["loss_oa"] = _per_sample_mse(outputs["pred_oa"], outputs["target_oa"]).sum() / pred_m.shape[0]
        else:
            terms["loss_oa"] = zero
        weights = {
            "loss_mask": self.mask_weight,
            "loss_img": self.image_weight,
            "loss_nc": self.nc_weight,
            "loss_oa": self.oa_weight,
        }
        total = sum(w * terms[k] for k, w in weights.items() if w != 0)
        if not isinstance(total, torch.Tensor):
            raise ValueError("every loss weight is 0: nothing to train")
        return {"loss": total, **terms}


def _unwrap(network: nn.Module) -> nn.Module:
    return unwrap_network(network)


class SiameseDiffusionTrainer(SupervisedTrainer):
    """``SupervisedTrainer`` for Siamese-Diffusion (Qiu et al., Noise-Consistent Siamese-Diffusion for Medical Image
    Synthesis and Segmentation, arXiv 2505.06068).

    Each iteration: ``prepare_batch`` draws the noise and timesteps (and gives the target for ``prediction_type``);
    the network (a :class:`~monai_siamese.networks.SiameseDiffusionNetwork`, possibly wrapped in
    ``DistributedDataParallel``) runs Mask-Diffusion, Image-Diffusion with the image-hint weight
    ``w_i = global_step / max_steps`` (0 -> 1 over training) and, once ``global_step > oa_start * max_steps``, online
    augmentation for the samples with ``t <= oa_max_t``; :class:`SiameseDiffusionLoss` combines the terms. AMP,
    gradient accumulation and the ``IterationEvents`` (``BACKWARD_COMPLETED`` for gradient clipping) work as in
    ``SupervisedTrainer``. The engine output holds ``loss``, ``loss_mask``, ``loss_img``, ``loss_nc``, ``loss_oa``,
    ``image_weight`` and ``oa_samples`` for the stats handlers.

    Args:
        device: device of the step.
        max_epochs: epochs to run.
        train_data_loader: batches with ``image`` and the encoded mask under ``condition_name`` of ``prepare_batch``.
        network: the Siamese-Diffusion network.
        optimizer: optimizer over the trainable parameters.
        loss_function: :class:`SiameseDiffusionLoss` (default: all weights 1).
        epoch_length: iterations per epoch.
        prepare_batch: :class:`~monai_siamese.engines.ConditionalDiffusionPrepareBatch` (its ``prediction_type`` must
            be the network's).
        max_steps: training length for ``w_i`` and the online-augmentation start (default: ``max_epochs *
            epoch_length``).
        oa_start: fraction of ``max_steps`` after which online augmentation runs.
        oa_max_t: online augmentation only for samples with ``t <= oa_max_t``.
        image_hint: :class:`ImageHint`, how the image is matched to the hint channels.
        image_hint_key: batch key of the image hint's source (default: the diffused image ``x0``; give e.g. the
            pixel image when ``x0`` is a latent).
        non_blocking, train_handlers, amp, amp_kwargs, decollate, optim_set_to_none, to_kwargs,
        accumulation_steps, event_names, event_to_attr: as ``SupervisedTrainer``.
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable,
        network: nn.Module,
        optimizer: Optimizer,
        loss_function: Callable | None = None,
        epoch_length: int | None = None,
        prepare_batch: Callable | None = None,
        max_steps: int | None = None,
        oa_start: float = 1.0 / 3.0,
        oa_max_t: int = 200,
        image_hint: ImageHint | str = ImageHint.REPEAT,
        image_hint_key: str | None = None,
        non_blocking: bool = False,
        train_handlers: Sequence | None = None,
        amp: bool = False,
        amp_kwargs: dict | None = None,
        decollate: bool = False,
        optim_set_to_none: bool = False,
        to_kwargs: dict | None = None,
        accumulation_steps: int = 1,
        event_names: list | None = None,
        event_to_attr: dict | None = None,
    ) -> None:
        net = _unwrap(network)
        if not isinstance(net, SiameseDiffusionNetwork):
            raise TypeError(f"network must be a SiameseDiffusionNetwork (or one in DDP), got {type(net).__name__}")
        if prepare_batch is None:
            prepare_batch = ConditionalDiffusionPrepareBatch(
                num_train_timesteps=net.scheduler.num_train_timesteps,
                condition_name="cond",
                prediction_type=net.prediction_type.value,
                scheduler=net.scheduler,
            )
        elif getattr(prepare_batch, "prediction_type", net.prediction_type.value) != net.prediction_type.value:
            raise ValueError(
                f"prepare_batch predicts {prepare_batch.prediction_type!r}, the network {net.prediction_type.value!r}"
            )
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            train_data_loader=train_data_loader,
            network=network,
            optimizer=optimizer,
            loss_function=loss_function if loss_function is not None else SiameseDiffusionLoss(),
            epoch_length=epoch_length,
            non_blocking=non_blocking,
            prepare_batch=prepare_batch,
            train_handlers=train_handlers,
            amp=amp,
            amp_kwargs=amp_kwargs,
            decollate=decollate,
            optim_set_to_none=optim_set_to_none,
            to_kwargs=to_kwargs,
            accumulation_steps=accumulation_steps,
            event_names=event_names,
            event_to_attr=event_to_attr,
        )
        self.max_steps = max_steps
        self.oa_start = oa_start
        self.oa_max_t = oa_max_t
        self.image_hint = ImageHint(image_hint)
        self.image_hint_key = image_hint_key

    def total_steps(self) -> int:
        if self.max_steps is not None:
            return max(int(self.max_steps), 1)
        return max(int(self.state.max_epochs or 1) * int(self.state.epoch_length or 1), 1)

    def global_step(self) -> int:
        """Optimizer steps done before the current iteration (0 at the first)."""
        return max(int(self.state.iteration) - 1, 0)

    def image_weight(self) -> float:
        """w_i = global_step / max_steps, clipped to [0, 1]."""
        return min(self.global_step() / self.total_steps(), 1.0)

    def oa_active(self) -> bool:
        """Whether online augmentation runs in this iteration."""
        return self.global_step() > self.oa_start * self.total_steps()

    def _branches(self, loss: SiameseDiffusionLoss) -> tuple[bool, bool]:
        oa = bool(getattr(loss, "oa_weight", 1.0)) and self.oa_active()
        image = oa or any(bool(getattr(loss, k, 1.0)) for k in ("image_weight", "nc_weight"))
        return image, oa

    def _iteration(self, engine: SiameseDiffusionTrainer, batchdata: dict[str, torch.Tensor]) -> dict:
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        images, target, _, kwargs = engine.prepare_batch(
            batchdata, engine.state.device, engine.non_blocking, **engine.to_kwargs
        )
        noise, timesteps, mask_hint = kwargs["noise"], kwargs["timesteps"], kwargs["condition"]
        run_image, run_oa = engine._branches(engine.loss_function)
        image_hint = None
        if run_image:
            src = images
            if engine.image_hint_key is not None:
                src = batchdata[engine.image_hint_key]
                src = (src.as_tensor() if hasattr(src, "as_tensor") else src).to(engine.state.device)
            image_hint = make_image_hint(src, mask_hint.shape[1], engine.image_hint, mask_hint.shape[2:])
        oa_select = timesteps <= engine.oa_max_t if run_oa else None
        w_i = engine.image_weight()
        engine.state.output = {Keys.IMAGE: images, Keys.LABEL: target}

        def _compute_pred_loss() -> None:
            out = engine.network(images, noise, timesteps, mask_hint, image_hint, w_i, oa_select)
            engine.state.output[Keys.PRED] = out["pred_mask"]
            engine.fire_event(IterationEvents.FORWARD_COMPLETED)
            terms = engine.loss_function(out, target)
            engine.state.output[Keys.LOSS] = terms["loss"]
            for k in LOSS_KEYS[1:]:
                engine.state.output[k] = terms[k].detach()
            engine.state.output["image_weight"] = w_i
            engine.state.output["oa_samples"] = int(out["oa_index"].numel()) if "oa_index" in out else 0
            engine.fire_event(IterationEvents.LOSS_COMPLETED)

        acc = engine.accumulation_steps
        local_iter = (engine.state.iteration - 1) % (engine.state.epoch_length or 2**62)
        should_zero_grad = acc == 1 or local_iter % acc == 0
        should_step = acc == 1 or (local_iter + 1) % acc == 0 or (local_iter + 1) == engine.state.epoch_length

        engine.network.train()
        if should_zero_grad:
            engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        if engine.amp and engine.scaler is not None:
            with torch.autocast("cuda", **engine.amp_kwargs):
                _compute_pred_loss()
            loss = engine.state.output[Keys.LOSS]
            engine.scaler.scale(loss / acc if acc > 1 else loss).backward()
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
            if should_step:
                engine.scaler.step(engine.optimizer)
                engine.scaler.update()
        else:
            _compute_pred_loss()
            loss = engine.state.output[Keys.LOSS]
            (loss / acc if acc > 1 else loss).backward()
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
            if should_step:
                engine.optimizer.step()
        engine.state.output[Keys.LOSS] = loss.detach()
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output
