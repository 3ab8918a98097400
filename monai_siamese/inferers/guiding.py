"""MedDiff-FT inference: the dynamic adaptive guiding mask and the inpainting job builder for
:class:`~monai_siamese.inferers.PairGenerator`.

MedDiff-FT's abstract says that "during inference, a dynamic adaptive guiding mask enforces spatial constraints to
ensure anatomically coherent synthesis"; the public code does not include it, so this design is ours: the region
the model may change is the structure's mask dilated by a margin proportional to the structure's size, shrinking
linearly (``power`` 1) from ``margin_fraction * size`` at ``t = T`` to ``min_margin`` at ``t = 0``; outside it
the known canvas image, noised to the current level, replaces the sample after every step (as in RePaint), so
the anatomy outside stays the canvas's.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.networks.schedulers import Scheduler

from monai_siamese.diffusion import add_noise
from monai_siamese.inferers.sampler import seeded_noise
from monai_siamese.transforms.mask_generator import StochasticMaskGenerator
from monai_siamese.transforms.morphology import InpaintConditiond, distance_outside, structure_size

__all__ = ["DynamicGuidingMask", "InpaintJobs"]


class DynamicGuidingMask:
    """Per-step blending hook ``x = hook(x, t, t_prev)`` for :class:`~monai_siamese.inferers.ConditionalSampler`.

    Args:
        known: canvas images ``(B, C, *spatial)`` in [-1, 1].
        foreground: editable structures ``(B, 1, *spatial)`` (non-zero = structure).
        scheduler: the sampling scheduler (for ``add_noise``).
        margin_fraction: margin at ``t = T`` as a fraction of the structure's equivalent diameter.
        min_margin: margin at ``t = 0`` in pixels (the final editable region).
        power: shrink profile ``(t / T) ** power``.
        seeds: per-sample seeds of the canvas noise.
    """

    def __init__(
        self,
        known: torch.Tensor,
        foreground: torch.Tensor,
        scheduler: Scheduler,
        margin_fraction: float = 0.15,
        min_margin: float = 1.0,
        power: float = 1.0,
        seeds: Sequence[int] | None = None,
    ) -> None:
        self.known = known
        self.scheduler = scheduler
        self.margin_fraction = margin_fraction
        self.min_margin = min_margin
        self.power = power
        self.seeds = list(seeds) if seeds is not None else list(range(known.shape[0]))
        fg = foreground.detach().cpu() > 0
        self.distance = torch.from_numpy(np.stack([distance_outside(f[0]) for f in fg]))[:, None].to(known.device)
        self.sizes = torch.tensor([structure_size(f[0]) for f in fg], dtype=torch.float32, device=known.device)
        self.num_train_timesteps = int(scheduler.num_train_timesteps)

    def margin(self, t: int) -> torch.Tensor:
        """Per-sample margin (pixels) at timestep ``t`` (``t < 0``: the end of sampling)."""
        frac = max(t, 0) / max(self.num_train_timesteps - 1, 1)
        m = self.margin_fraction * self.sizes * frac**self.power
        return torch.clamp(m, min=self.min_margin)

    def region(self, t: int) -> torch.Tensor:
        """Float region ``(B, 1, *spatial)``: 1 where the model may change the image at timestep ``t``."""
        m = self.margin(t).reshape(-1, *([1] * (self.distance.ndim - 1)))
        return (self.distance <= m).to(self.known.dtype)

    def to_latent(self, codec: Any) -> DynamicGuidingMask:
        """The same guiding mask on a latent grid (a latent sampler's hook): the canvas encoded by ``codec``, the
        distance map min-pooled and every length divided by the codec's factor (a latent cell is editable when any of
        its pixels is)."""
        f = int(codec.factor)
        out = copy.copy(self)
        out.known = codec.encode(self.known.to(next(codec.parameters()).device))
        d = self.distance.to(out.known.device).float()
        out.distance = (-F.max_pool2d(-d, f) if d.ndim == 4 else -F.max_pool3d(-d, f)) / f
        out.sizes = self.sizes.to(out.known.device) / f
        out.min_margin = self.min_margin / f
        out._pixel = self
        return out

    def finalize(self, images: torch.Tensor) -> torch.Tensor:
        """After decoding latent samples: paste the canvas back outside the final region, at pixel resolution (the
        autoencoder's reconstruction error does not reach the known anatomy)."""
        src = getattr(self, "_pixel", self)
        region = src.region(-1).to(images.device)
        return region * images + (1 - region) * src.known.to(images)

    def __call__(self, x: torch.Tensor, t: int, t_prev: int) -> torch.Tensor:
        if self.known.device != x.device:
            self.known, self.distance, self.sizes = (v.to(x.device) for v in (self.known, self.distance, self.sizes))
        region = self.region(t_prev)
        if t_prev < 0:
            known_t = self.known
        else:
            noise = seeded_noise(self.known.shape[1:], [s * 7 + int(t_prev) for s in self.seeds], x.device, x.dtype)
            known_t = add_noise(self.scheduler, self.known, noise, torch.full((x.shape[0],), t_prev, device=x.device))
        return region * x + (1 - region) * known_t


class InpaintJobs:
    """The MedDiff-FT parts of a generation run, as the three hooks of
    :class:`~monai_siamese.inferers.PairGenerator`: ``prepare`` (a new mask per job from the stochastic mask
    generator, seeded by the job), ``condition`` (encoded new mask + canvas outside the editable region) and
    ``hooks`` (the dynamic guiding mask).

    The editable region is the union of the new mask's and the canvas's own foreground, so the canvas's original
    structure cannot survive outside the new mask.

    Args:
        num_classes: classes including background.
        scheduler: the sampling scheduler.
        mask_generator: generator of new masks (None: condition on the canvas's own mask).
        encoding: mask encoding of the condition.
        margin_fraction: guiding-mask margin at ``t = T`` (fraction of the structure size); also the region of
            the condition's known image.
        min_margin: final margin in pixels.
        power: shrink profile.
        append_region: append the editable region to the condition (latent inpainting, see
            :class:`~monai_siamese.networks.ConditionMode`).
    """

    def __init__(
        self,
        num_classes: int,
        scheduler: Scheduler,
        mask_generator: StochasticMaskGenerator | None = None,
        encoding: str = "onehot",
        margin_fraction: float = 0.15,
        min_margin: float = 1.0,
        power: float = 1.0,
        append_region: bool = False,
    ) -> None:
        self.num_classes = num_classes
        self.scheduler = scheduler
        self.mask_generator = mask_generator
        self.margin_fraction = margin_fraction
        self.min_margin = min_margin
        self.power = power
        self.condition_t = InpaintConditiond(
            num_classes=num_classes,
            encoding=encoding,
            margin_range=(margin_fraction, margin_fraction),
            min_margin=min_margin,
            extra_region_key="canvas_label",
            append_region=append_region,
        )

    def prepare(self, items: Sequence[Mapping[str, Any]], seeds: Sequence[int]) -> list[dict]:
        out = []
        for item, seed in zip(items, seeds):
            d = dict(item)
            if d.get("canvas_label") is None:  # a canvas without its own mask: the item's label is both
                d["canvas_label"] = d["label"]
            d["mask_generated"] = False
            if self.mask_generator is not None:
                self.mask_generator.set_random_state(seed=int(seed) % (2**32))
                new = self.mask_generator(d["label"])
                d["mask_generated"] = bool(self.mask_generator.last_accepted)
                if hasattr(d["label"], "meta") and not hasattr(new, "meta"):
                    from monai.data import MetaTensor

                    new = MetaTensor(new, meta=d["label"].meta)
                d["label"] = new
            out.append(self.condition_t(d))
        return out

    def condition(self, items: Sequence[Mapping[str, Any]]) -> torch.Tensor:
        return torch.stack([torch.as_tensor(it["cond"]).float() for it in items])

    def hooks(self, items: Sequence[Mapping[str, Any]], seeds: Sequence[int]) -> list[DynamicGuidingMask]:
        known = torch.stack([torch.as_tensor(it["image"]).float() for it in items])
        fg = torch.stack(
            [((torch.as_tensor(it["label"]) > 0) | (torch.as_tensor(it["canvas_label"]) > 0)).float() for it in items]
        )
        return [DynamicGuidingMask(known, fg, self.scheduler, self.margin_fraction, self.min_margin, self.power, seeds)]
