"""Siamese-Diffusion training on the stock ``SupervisedTrainer``: the loss of the four terms and the handler that
ramps the image-hint weight and switches online augmentation on (Qiu et al., arXiv 2505.06068). The forward pass is
:class:`~monai_siamese.inferers.SiameseDiffusionInferer`."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from ignite.engine import Engine, Events
from torch import nn

from monai_siamese.inferers.siamese import SiameseDiffusionInferer

__all__ = ["SiameseDiffusionLoss", "SiameseScheduleHandler", "LOSS_KEYS"]

#: the loss terms stored in the engine output (``loss`` is their weighted sum)
LOSS_KEYS = ("loss", "loss_mask", "loss_img", "loss_nc", "loss_oa")


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
    still reported). ``forward`` returns the weighted sum (what ``SupervisedTrainer`` back-propagates) and keeps the
    detached terms in :attr:`last_terms` for the stats handlers (:class:`SiameseScheduleHandler` copies them into the
    engine output).

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
        self.last_terms: dict[str, torch.Tensor] = {}

    def forward(self, outputs: Mapping[str, torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        """The weighted sum of the terms (see :meth:`terms`)."""
        terms = self.terms(outputs, target)
        self.last_terms = {k: v.detach() for k, v in terms.items()}
        return terms["loss"]

    def terms(self, outputs: Mapping[str, torch.Tensor], target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Args:
            outputs: what :class:`~monai_siamese.networks.SiameseDiffusionNetwork` returns.
            target: the regression target of ``pred_mask`` / ``pred_image``, or ``(target, per-sample weights)``.

        Returns:
            the terms of :data:`LOSS_KEYS` (``loss`` with its graph, the terms unweighted).
        """
        weights = None
        if isinstance(target, (tuple, list)):  # (target, per-sample weights) of min-SNR weighting
            target, weights = target

        def mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            per_sample = _per_sample_mse(a, b)
            return (per_sample * weights.to(per_sample) if weights is not None else per_sample).mean()

        pred_m = outputs["pred_mask"]
        zero = pred_m.new_zeros((), dtype=torch.float32)
        terms = {"loss_mask": mse(pred_m, target)}
        pred_i = outputs.get("pred_image")
        terms["loss_img"] = mse(pred_i, target) if pred_i is not None else zero
        terms["loss_nc"] = mse(pred_m, pred_i.detach()) if pred_i is not None else zero
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


class SiameseScheduleHandler:
    """The training schedule of Siamese-Diffusion on the stock ``SupervisedTrainer``: before every iteration, sets
    the inferer's image-hint weight ``w_i = global_step / max_steps`` (0 -> 1 over training) and turns online
    augmentation on once ``global_step > oa_start * max_steps``; after it, copies the loss terms, ``w_i`` and the
    number of augmented samples into the engine output (``loss_mask``, ``loss_img``, ``loss_nc``, ``loss_oa``,
    ``image_weight``, ``oa_samples``) for the stats handlers.

    ``global_step`` is the number of optimizer steps before the current iteration (0 at the first); it is derived
    from the engine's iteration, so a resumed run continues the schedule exactly.

    Args:
        inferer: the trainer's :class:`~monai_siamese.inferers.SiameseDiffusionInferer`.
        loss: the trainer's :class:`SiameseDiffusionLoss` (also decides whether augmentation runs: weight 0 = off).
        max_steps: training length for ``w_i`` and the augmentation start (default: ``max_epochs * epoch_length``).
        oa_start: fraction of ``max_steps`` after which online augmentation runs.
    """

    def __init__(
        self,
        inferer: SiameseDiffusionInferer,
        loss: SiameseDiffusionLoss,
        max_steps: int | None = None,
        oa_start: float = 1.0 / 3.0,
    ) -> None:
        self.inferer = inferer
        self.loss = loss
        self.max_steps = max_steps
        self.oa_start = oa_start

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_STARTED, self.schedule)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.report)

    def total_steps(self, engine: Engine) -> int:
        if self.max_steps is not None:
            return max(int(self.max_steps), 1)
        return max(int(engine.state.max_epochs or 1) * int(engine.state.epoch_length or 1), 1)

    def schedule(self, engine: Engine) -> None:
        step, total = max(int(engine.state.iteration) - 1, 0), self.total_steps(engine)
        self.inferer.image_weight = min(step / total, 1.0)
        self.inferer.oa_active = bool(self.loss.oa_weight) and step > self.oa_start * total

    def report(self, engine: Engine) -> None:
        out = engine.state.output
        if not isinstance(out, dict):
            return
        out.update({k: v for k, v in self.loss.last_terms.items() if k != "loss"})
        out["image_weight"] = self.inferer.image_weight
        pred = out.get("pred")
        out["oa_samples"] = int(pred["oa_index"].numel()) if isinstance(pred, Mapping) and "oa_index" in pred else 0
