"""Generate synthetic pairs for the masks of a dataset and write them with the shared writer (resumable)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from monai_siamese.data.intensity import RANGE_KEY, from_unit_range
from monai_siamese.data.pipeline import unfit_slices
from monai_siamese.data.writer import SyntheticPairWriter, pair_name
from monai_siamese.inferers.sampler import ConditionalSampler, LatentInterpolation, seeded_noise
from monai_siamese.utils import default_device

__all__ = ["Job", "QualityFilter", "PairGenerator", "sample_seed", "to_source_grid"]

logger = logging.getLogger(__name__)

#: ``[(accepted, reason), ...] = filter(images in [-1, 1], labels, items)`` for a batch
QualityFilter = Callable[[torch.Tensor, torch.Tensor, Sequence[Mapping]], Sequence[tuple[bool, str | None]]]


def to_source_grid(image: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Undo :func:`~monai_siamese.data.fit_slice_transform` on a generated ``(C, h, w)`` image: back onto the
    source slice ``shape`` (:func:`~monai_siamese.data.unfit_slices`)."""
    return unfit_slices(image, shape)


def sample_seed(seed: int, mask_index: int, sample_index: int) -> int:
    """Seed of sample ``sample_index`` of mask ``mask_index``: a pure function, so reruns reproduce samples."""
    return ((int(seed) * 1_000_003 + int(mask_index)) * 1009 + int(sample_index)) % (2**63 - 1)


@dataclass(frozen=True)
class Job:
    mask_index: int
    sample_index: int
    name: str
    seed: int


def _scalar(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return v.item() if v.numel() == 1 else v.tolist()
    return v


class PairGenerator:
    """Sample ``samples_per_mask`` images per mask of ``dataset`` (or until ``num_pairs`` are accepted) and write
    image/label pairs with :class:`~monai_siamese.data.SyntheticPairWriter`.

    Every sample has its own seed (:func:`sample_seed`), so a rerun skips what exists and reproduces the rest.

    Args:
        denoiser: ``eps = denoiser(x_t, t, cond)`` (e.g. :class:`~monai_siamese.networks.ConcatConditionedUNet`).
        sampler: :class:`~monai_siamese.inferers.ConditionalSampler`.
        dataset: items with ``cond`` (encoded mask), ``label``, optionally ``image`` and ``intensity_range``
            (e.g. a :class:`~monai_siamese.data.SliceDataset` with ``EncodeMaskd``).
        writer: the output writer.
        samples_per_mask: samples per mask (upper bound per mask when ``num_pairs`` is set).
        num_pairs: stop once this many pairs are accepted (None: all masks x samples_per_mask).
        batch_size: samples per sampler call.
        seed: base seed.
        image_channels: channels of the generated image.
        device: device (default: cuda when available).
        interpolation_lambda: latent interpolation weight with the mask's real image (None: off).
        interpolation_t: timestep of the interpolation.
        prepare_fn: replaces a batch's items before sampling, given the items and the jobs' seeds (e.g. a new
            generated mask per job); the written label is the prepared item's ``label``.
        condition_fn: builds the denoiser condition from a list of items (default: stack ``cond``).
        hooks_fn: builds per-step hooks for a batch (guiding-mask blending), given the items and the seeds.
        quality_filter: optional filter; rejected pairs are counted by reason and not written.
        label_fn: maps the conditioning label to the written label (e.g. erosion); default identity.
        source_load: write pairs on the grid of their source mask instead of the model's: the transform that loads
            a ``{"label": path}`` as the dataset did (e.g. the bundle's ``load_transform``); the generated image is
            resampled back (the inverse of :func:`~monai_siamese.data.fit_slice_transform`: padding removed,
            bilinear resize) and paired with the source mask at its own resolution, so a generator run at a lower
            size than the segmenter gives sharp labels (2D source masks; others stay on the model grid).
        max_masks: use only the first ``max_masks`` masks.
        progress: log progress.
    """

    def __init__(
        self,
        denoiser: nn.Module | Callable,
        sampler: ConditionalSampler,
        dataset: Sequence[Mapping],
        writer: SyntheticPairWriter,
        samples_per_mask: int = 1,
        num_pairs: int | None = None,
        batch_size: int = 8,
        seed: int = 0,
        image_channels: int = 1,
        device: torch.device | str | None = None,
        interpolation_lambda: float | None = None,
        interpolation_t: int = 500,
        prepare_fn: Callable[[Sequence[Mapping], Sequence[int]], Sequence[Mapping]] | None = None,
        condition_fn: Callable[[Sequence[Mapping]], torch.Tensor] | None = None,
        hooks_fn: Callable[[Sequence[Mapping], Sequence[int]], Sequence] | None = None,
        quality_filter: QualityFilter | None = None,
        label_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
        max_masks: int | None = None,
        progress: bool = True,
        source_load: Callable[[Mapping], Mapping] | None = None,
    ) -> None:
        self.denoiser = denoiser
        self.sampler = sampler
        self.dataset = dataset
        self.writer = writer
        self.samples_per_mask = samples_per_mask
        self.num_pairs = num_pairs
        self.batch_size = batch_size
        self.seed = seed
        self.image_channels = image_channels
        self.device = torch.device(device) if device is not None else default_device()
        self.interpolation_lambda = interpolation_lambda
        self.interpolation_t = interpolation_t
        self.prepare_fn = prepare_fn
        self.condition_fn = condition_fn
        self.hooks_fn = hooks_fn
        self.quality_filter = quality_filter
        self.label_fn = label_fn
        self.source_load = source_load
        self.num_masks = len(dataset) if max_masks is None else min(max_masks, len(dataset))
        self.progress = progress
        self._names: dict[int, tuple[str, int]] = {}
        self.generated = 0

    def _source(self, m: int) -> tuple[str, int]:
        if m not in self._names:
            item = self.dataset[m]
            src = item.get("source_label") or item.get("source_image") or f"mask{m}"
            self._names[m] = (str(src), int(_scalar(item.get("slice_index", -1))))
        return self._names[m]

    def jobs(self) -> Iterator[Job]:
        """All (mask, sample) jobs in round-robin order over the masks."""
        for k in range(self.samples_per_mask):
            for m in range(self.num_masks):
                src, sl = self._source(m)
                yield Job(m, k, pair_name(src, sl, k, mask_index=m), sample_seed(self.seed, m, k))

    def _condition(self, items: Sequence[Mapping]) -> torch.Tensor:
        if self.condition_fn is not None:
            return self.condition_fn(items).to(self.device)
        return torch.stack([torch.as_tensor(it["cond"]).float() for it in items]).to(self.device)

    def _sample(self, jobs: Sequence[Job]) -> tuple[torch.Tensor, list[Mapping]]:
        items = [self.dataset[j.mask_index] for j in jobs]
        seeds = [j.seed for j in jobs]
        if self.prepare_fn is not None:
            items = list(self.prepare_fn(items, seeds))
        cond = self._condition(items)
        spatial = tuple(cond.shape[2:])
        noise = seeded_noise((self.image_channels, *spatial), seeds, self.device)
        interp = None
        if self.interpolation_lambda is not None:
            ref = torch.stack([torch.as_tensor(it["image"]).float() for it in items]).to(self.device)
            interp = LatentInterpolation(ref, float(self.interpolation_lambda), int(self.interpolation_t), seeds)
        hooks = self.hooks_fn(items, seeds) if self.hooks_fn is not None else ()
        if isinstance(self.denoiser, nn.Module):
            self.denoiser.eval()
        images = self.sampler(self.denoiser, cond, noise, interpolation=interp, hooks=hooks)
        return images, items

    def _write(self, job: Job, image: torch.Tensor, item: Mapping) -> None:
        label, affine = item["label"], getattr(item["label"], "affine", None)
        if self.source_load is not None and item.get("source_label"):
            native = self.source_load({"label": str(item["source_label"])})["label"]
            if native.ndim == 3:  # a 2D source mask: the pair goes back onto its grid
                image = to_source_grid(image, tuple(native.shape[1:]))
                label, affine = native, getattr(native, "affine", None)
        label = torch.as_tensor(label).long().cpu()
        if self.label_fn is not None:
            label = self.label_fn(label)
        rng = item.get(RANGE_KEY)
        lo, hi = (float(rng[0]), float(rng[1])) if rng is not None else (0.0, 1.0)
        record = {
            "seed": job.seed,
            "sample_index": job.sample_index,
            "mask_index": job.mask_index,
            "source_mask": str(item.get("source_label", "")),
            "source_image": str(item.get("source_image", "")),
            "slice_index": int(_scalar(item.get("slice_index", -1))),
            "guidance_scale": self.sampler.guidance_scale,
            "num_inference_steps": self.sampler.num_inference_steps,
        }
        if self.interpolation_lambda is not None:
            record["interpolation"] = {"lambda": self.interpolation_lambda, "t": self.interpolation_t}
        if "mask_generated" in item:
            record["mask_generated"] = bool(item["mask_generated"])
        self.writer.write(
            job.name,
            from_unit_range(image.cpu(), lo, hi),
            label,
            affine,
            record=record,
            preview_image=image.cpu(),
        )

    def run(self) -> dict[str, Any]:
        """Generate, filter and write; return the output paths and counts."""
        accepted = len([j for j in self.jobs() if self.writer.done(j.name)]) if self.num_pairs else 0
        pending: list[Job] = []

        def flush() -> int:
            nonlocal pending
            if not pending:
                return 0
            images, items = self._sample(pending)
            self.generated += len(pending)
            verdicts = [(True, None)] * len(pending)
            if self.quality_filter is not None:
                labels = torch.stack([torch.as_tensor(it["label"]).long() for it in items])
                verdicts = list(self.quality_filter(images, labels, items))
            n_ok = 0
            for job, img, item, (ok, reason) in zip(pending, images, items, verdicts):
                if ok:
                    self._write(job, img, item)
                    n_ok += 1
                else:
                    self.writer.reject(job.name, reason or "rejected", {"seed": job.seed})
            pending = []
            return n_ok

        for job in self.jobs():
            if self.num_pairs is not None and accepted >= self.num_pairs:
                break
            if self.writer.done(job.name):
                self.writer.skipped += 1
                continue
            if self.writer.is_rejected(job.name):
                continue
            pending.append(job)
            room = None if self.num_pairs is None else self.num_pairs - accepted
            if len(pending) >= self.batch_size or (room is not None and len(pending) >= room):
                accepted += flush()
                if self.progress:
                    logger.info(f"generated {self.generated}, written {self.writer.written}")
        accepted += flush()
        counts = {"generated_this_run": self.generated, "masks": self.num_masks}
        paths = self.writer.finalize({"counts": counts})
        logger.info(f"synthetic pairs in {self.writer.root}: {self.writer.written} written, {self.writer.skipped} kept")
        return {**paths, "written": self.writer.written, "generated": self.generated}
