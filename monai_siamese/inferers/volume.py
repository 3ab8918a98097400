"""Whole synthetic volumes from 3D label maps, slice by slice with a 2D conditional denoiser.

A 2D mask-conditioned generator (SegGuidedDiff concat conditioning, Konz et al., arXiv 2402.05210; or a ControlNet
denoiser) samples one slice at a time. Pasting independently sampled slices into a volume gives stripes in the
reformats perpendicular to the slicing plane: neighbouring slices share anatomy but not texture or exact intensity.
:class:`VolumeGenerator` generates the slices of a label volume *in order*, each conditioned on its own mask, its
neighbours' masks and the previously generated slice (a model trained with
:class:`~monai_siamese.transforms.ContextConditiond`), and writes one NIfTI volume on exactly the label's grid.

Modes (:class:`VolumeMode`): ``independent`` samples every slice on its own (a model trained with
``context_slices=0`` is today's per-slice sampling; with ``context_slices=k`` and no previous image, the neighbour
masks only), batched; ``consistent`` adds the previous generated slice, so slices are sampled sequentially.
Noise (:class:`SliceNoise`): ``per_slice`` draws each slice's initial noise from its own seed; ``shared`` uses the
same initial noise for every slice of a volume, which with a deterministic sampler (DDIM ``eta=0``, DPM-Solver++)
makes similar masks give similar textures, a cheap extra that works with either mode.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from enum import Enum
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from torch import nn

from monai_siamese.data.intensity import IntensityPreset, ScaleIntensityPresetd, from_unit_range
from monai_siamese.data.pipeline import fit_slice_transform, unfit_slices
from monai_siamese.data.volume import LabelVolume, SyntheticVolumeWriter, read_label_volume
from monai_siamese.data.writer import pair_name
from monai_siamese.inferers.generate import sample_seed
from monai_siamese.inferers.sampler import ConditionalSampler, seeded_noise
from monai_siamese.inferers.volume_canvas import CanvasVolume, VolumeCanvas
from monai_siamese.transforms.context import ContextEdge, context_channels, encode_context
from monai_siamese.transforms.mask import NULL_CONDITION, MaskEncoding
from monai_siamese.utils import default_device

__all__ = ["VolumeMode", "SliceNoise", "EmptySlices", "VolumeGenerator", "slice_noise_seed", "condition_channels_of"]

logger = logging.getLogger(__name__)


class VolumeMode(str, Enum):
    """How the slices of a volume are conditioned."""

    INDEPENDENT = "independent"  # each slice on its own masks (batched)
    CONSISTENT = "consistent"  # also on the previously generated slice (sequential)


class SliceNoise(str, Enum):
    """Initial noise of the slices of one volume."""

    PER_SLICE = "per_slice"  # each slice its own seed
    SHARED = "shared"  # one noise image for every slice of the volume


class EmptySlices(str, Enum):
    """What to do with slices whose label has less than ``min_foreground`` foreground."""

    GENERATE = "generate"  # sample them like any other slice (the default)
    FILL = "fill"  # fill with ``fill_value`` (model units) without sampling, e.g. skull-stripped MR outside the brain


def slice_noise_seed(volume_seed: int, slice_index: int, noise: SliceNoise | str = SliceNoise.PER_SLICE) -> int:
    """Seed of the initial noise of slice ``slice_index`` of a volume with seed ``volume_seed``."""
    if SliceNoise(noise) == SliceNoise.SHARED:
        return sample_seed(volume_seed, 0, 0)
    return sample_seed(volume_seed, int(slice_index) + 1, 0)


def condition_channels_of(denoiser: Any, image_channels: int = 1) -> int | None:
    """Condition channels a denoiser expects, when it can be read from the network (None when not).

    :class:`~monai_siamese.networks.ConcatConditionedUNet` around a UNet with ``in_channels``: ``in_channels -
    image_channels``; a ControlNet denoiser: the ControlNet's hint channels.
    """
    for attr in ("controlnet", "control_net"):
        cn = getattr(denoiser, attr, None)
        emb = getattr(cn, "controlnet_cond_embedding", None) if cn is not None else None
        conv = getattr(emb, "conv_in", None) if emb is not None else None
        inner = getattr(conv, "conv", conv)
        if inner is not None and hasattr(inner, "in_channels"):
            return int(inner.in_channels)
    unet = getattr(denoiser, "unet", None)
    if unet is not None and isinstance(getattr(unet, "in_channels", None), int):
        return int(unet.in_channels) - image_channels
    return None


class VolumeGenerator:
    """Generate synthetic 3D volumes from 3D label maps with a 2D conditional denoiser (see the module docstring).

    Per label volume and sample: read and check the label (a 2D label or values the model was not trained for stop
    with one line naming the file), reorient to the slicing orientation (RAS, as training), fit every slice to the
    model size exactly as training did (:func:`~monai_siamese.data.fit_slice_transform`), sample the slices, undo the
    fit (crop the padding, resize back in-plane), reorient back to the file's axes and write the image in the preset's
    units (HU for ``ct``: :func:`~monai_siamese.data.from_unit_range` with the window) with the label's affine and
    shape, plus the label (as classes) and a 3D datalist entry (``synthetic: true``, seed, source label, method).
    Every volume has its own seed (:func:`~monai_siamese.inferers.sample_seed`) and is written atomically with its
    record last, so a rerun skips finished volumes and reproduces the others bit for bit.

    Args:
        denoiser: ``eps = denoiser(x_t, t, cond)`` with the condition layout of
            :class:`~monai_siamese.transforms.ContextConditiond` (e.g. a
            :class:`~monai_siamese.networks.ConcatConditionedUNet`).
        sampler: the :class:`~monai_siamese.inferers.ConditionalSampler` (deterministic DDIM / DPM-Solver++ for
            ``noise="shared"``).
        labels: label volumes: paths or datalist entries ``{"label": path, "image": optional real image}``.
        output_dir: output folder (see :class:`~monai_siamese.data.volume.SyntheticVolumeWriter`).
        num_classes: classes the model was trained with (background included).
        spatial_size: the model's 2D input size (as ``fit_slice_transform`` in training).
        preset: intensity preset of training (``ct``, ``mr``, ...).
        window: CT window in HU (``ct``).
        percentiles: MR percentiles (used with a real ``image`` in the entry to recover its units).
        intensity_range: ``(lo, hi)`` mapped to [-1, 1] for writing; default: the CT window, 0..255 for ``rgb`` /
            ``grey``, else the preset's range of the entry's real ``image`` when given, else ``(0, 1)``.
        slice_axis: slicing axis (of the RAS-oriented volume, as in training).
        mode: :class:`VolumeMode`.
        context_slices: neighbour masks per side in the condition (as the model was trained).
        noise: :class:`SliceNoise`.
        mask_encoding: mask encoding of training.
        edge: :class:`~monai_siamese.transforms.ContextEdge` of training.
        image_channels: channels of the generated image.
        label_mapping: label remap of training.
        label_threshold: label binarisation of training.
        axcodes: orientation of the slicing grid (None: the files' own axes).
        keep_aspect: as ``fit_slice_transform`` in training.
        empty_slices: :class:`EmptySlices`.
        min_foreground: a slice with fewer foreground pixels (or this fraction when < 1) is "empty".
        fill_value: model-unit value of filled empty slices.
        samples_per_label: synthetic volumes per label.
        seed: base seed.
        batch_size: slices per sampler call in ``independent`` mode.
        device: device (default: cuda when available).
        method: method name recorded in the entries.
        null_value: the null value of training.
        previews: write an orthogonal-reformat PNG per volume.
        progress: log progress.
        canvas: MedDiff-FT inpainting (:class:`~monai_siamese.inferers.VolumeCanvas`): every entry names a real
            canvas ``image``; its known part joins the condition and the dynamic guiding mask runs at every step.
    """

    def __init__(
        self,
        denoiser: nn.Module | Callable,
        sampler: ConditionalSampler,
        labels: Sequence[Mapping | str],
        output_dir: str | os.PathLike,
        num_classes: int,
        spatial_size: int | Sequence[int],
        preset: IntensityPreset | str = IntensityPreset.MR,
        window: Sequence[float] = (-160.0, 240.0),
        percentiles: Sequence[float] = (0.5, 99.5),
        intensity_range: Sequence[float] | None = None,
        slice_axis: int = 2,
        mode: VolumeMode | str = VolumeMode.CONSISTENT,
        context_slices: int = 0,
        noise: SliceNoise | str = SliceNoise.PER_SLICE,
        mask_encoding: MaskEncoding | str = MaskEncoding.ONEHOT,
        edge: ContextEdge | str = ContextEdge.CLAMP,
        image_channels: int = 1,
        label_mapping: Mapping[int, int] | None = None,
        label_threshold: float | None = None,
        axcodes: str | None = "RAS",
        keep_aspect: bool = True,
        empty_slices: EmptySlices | str = EmptySlices.GENERATE,
        min_foreground: float = 1,
        fill_value: float = NULL_CONDITION,
        samples_per_label: int = 1,
        seed: int = 0,
        batch_size: int = 16,
        device: torch.device | str | None = None,
        method: str = "volume",
        null_value: float = NULL_CONDITION,
        previews: bool = True,
        progress: bool = True,
        canvas: VolumeCanvas | None = None,
    ) -> None:
        if slice_axis not in (0, 1, 2):
            raise ValueError(f"slice_axis must be 0, 1 or 2, got {slice_axis}")
        self.denoiser = denoiser
        self.sampler = sampler
        self.labels = [{"label": e} if isinstance(e, (str, os.PathLike)) else dict(e) for e in labels]
        self.num_classes = num_classes
        self.spatial_size = (spatial_size, spatial_size) if isinstance(spatial_size, int) else tuple(spatial_size)
        self.preset = IntensityPreset(preset)
        self.window = (float(window[0]), float(window[1]))
        self.percentiles = (float(percentiles[0]), float(percentiles[1]))
        self.intensity_range = tuple(float(v) for v in intensity_range) if intensity_range is not None else None
        self.slice_axis = slice_axis
        self.mode = VolumeMode(mode)
        self.context_slices = int(context_slices)
        self.noise = SliceNoise(noise)
        self.mask_encoding = MaskEncoding(mask_encoding)
        self.edge = ContextEdge(edge)
        self.image_channels = image_channels
        self.label_mapping = label_mapping
        self.label_threshold = label_threshold
        self.axcodes = axcodes
        self.keep_aspect = keep_aspect
        self.empty_slices = EmptySlices(empty_slices)
        self.min_foreground = min_foreground
        self.fill_value = float(fill_value)
        self.samples_per_label = samples_per_label
        self.seed = seed
        self.batch_size = batch_size
        self.device = torch.device(device) if device is not None else default_device()
        self.method = method
        self.null_value = float(null_value)
        self.progress = progress
        self.canvas = canvas
        self.fit = fit_slice_transform(self.spatial_size, keep_aspect=keep_aspect)
        self.writer = SyntheticVolumeWriter(output_dir, method, num_classes, previews=previews, config=self.settings())
        self.generated = 0

    # --- settings ---------------------------------------------------------------------------------------------------

    @property
    def previous_image(self) -> bool:
        return self.mode == VolumeMode.CONSISTENT

    @property
    def condition_channels(self) -> int:
        """Channels of the condition this generator builds (must equal what the model was trained with)."""
        mask = context_channels(
            self.num_classes, self.context_slices, self.mask_encoding, self.image_channels, self.previous_image
        )
        return mask + (self.image_channels if self.canvas is not None else 0)

    def settings(self) -> dict[str, Any]:
        """The settings recorded in the manifest."""
        return {
            "mode": self.mode.value,
            "noise": self.noise.value,
            "context_slices": self.context_slices,
            "num_classes": self.num_classes,
            "spatial_size": list(self.spatial_size),
            "preset": self.preset.value,
            "slice_axis": self.slice_axis,
            "mask_encoding": self.mask_encoding.value,
            "edge": self.edge.value,
            "empty_slices": self.empty_slices.value,
            "seed": self.seed,
            "sampler": type(self.sampler.scheduler).__name__,
            "num_inference_steps": self.sampler.num_inference_steps,
            "guidance_scale": self.sampler.guidance_scale,
            "eta": self.sampler.eta,
            "canvas": self.canvas is not None,
        }

    def check_model(self) -> None:
        """Fail before sampling when the denoiser expects another number of condition channels."""
        expected = condition_channels_of(self.denoiser, self.image_channels)
        if expected is not None and expected != self.condition_channels:
            raise ValueError(
                f"the denoiser expects {expected} condition channels but mode={self.mode.value}, "
                f"context_slices={self.context_slices}, {self.num_classes} classes ({self.mask_encoding.value}) give "
                f"{self.condition_channels}: set context_slices / mode as the model was trained"
            )

    def units(self, entry: Mapping, image_range: tuple[float, float] | None = None) -> tuple[float, float]:
        """The ``(lo, hi)`` that [-1, 1] maps back to for ``entry`` (see ``intensity_range``); ``image_range``: the
        range of the entry's real ``image`` when already known (a canvas read with the same preset)."""
        if self.intensity_range is not None:
            return self.intensity_range[0], self.intensity_range[1]
        if self.preset == IntensityPreset.CT:
            return self.window
        if self.preset in (IntensityPreset.RGB, IntensityPreset.GREY):
            return 0.0, 255.0
        if image_range is not None:
            return image_range
        if entry.get("image"):
            from monai.transforms import LoadImage

            img = LoadImage(image_only=True)(str(entry["image"]))
            scaler = ScaleIntensityPresetd("image", preset=self.preset, percentiles=self.percentiles)
            return scaler.source_range(torch.as_tensor(img))
        logger.warning(f"{entry.get('label')}: no intensity_range and no real image: writing [-1, 1] as [0, 1]")
        return 0.0, 1.0

    # --- one volume -------------------------------------------------------------------------------------------------

    def _fit_labels(self, slices: torch.Tensor) -> torch.Tensor:
        """``(n, h, w)`` label slices -> ``(n, S1, S2)`` as training's slice fit (nearest resize + zero pad)."""
        out = self.fit({"label": MetaTensor(slices.float())})["label"]
        return torch.as_tensor(out).round().long()

    def _unfit(self, images: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """``(n, C, S1, S2)`` generated slices -> ``(n, C, h, w)`` (:func:`~monai_siamese.data.unfit_slices`)."""
        return unfit_slices(images, (h, w), self.keep_aspect)

    def _condition(
        self, labels: torch.Tensor, index: Sequence[int], previous: torch.Tensor | None, first: bool
    ) -> torch.Tensor:
        """Batched condition of slices ``index`` of the fitted label stack ``labels`` ``(n, S1, S2)``."""
        n = labels.shape[0]
        idx = torch.as_tensor(list(index), dtype=torch.long)
        lab = labels[idx][:, None]
        ctx = valid = None
        if self.context_slices > 0:
            offs = [*range(-self.context_slices, 0), *range(1, self.context_slices + 1)]
            nb = torch.stack([(idx + o).clamp(0, n - 1) for o in offs], 1)  # (B, 2k)
            ctx = labels[nb]  # (B, 2k, S1, S2)
            valid = torch.stack([((idx + o) >= 0) & ((idx + o) < n) for o in offs], 1)
        prev_valid = None
        if self.previous_image:
            prev_valid = torch.full((len(index),), not first, dtype=torch.bool)
            if previous is None:
                previous = torch.full((len(index), self.image_channels, *labels.shape[1:]), self.null_value)
        cond = encode_context(
            lab,
            self.num_classes,
            context_label=ctx,
            context_valid=valid,
            previous=previous,
            previous_valid=prev_valid,
            context_slices=self.context_slices,
            previous_image=self.previous_image,
            encoding=self.mask_encoding,
            edge=self.edge,
            null_value=self.null_value,
        )
        return cond.to(self.device)

    def _is_empty(self, labels: torch.Tensor) -> torch.Tensor:
        counts = (labels > 0).flatten(1).sum(1)
        plane = labels.shape[1] * labels.shape[2]
        threshold = self.min_foreground * plane if 0 < self.min_foreground < 1 else self.min_foreground
        return counts < threshold

    @torch.no_grad()
    def generate(self, volume: LabelVolume, volume_seed: int, canvas: CanvasVolume | None = None) -> torch.Tensor:
        """Generate the image of one label volume; returns ``(C, X, Y, Z)`` in [-1, 1] on ``volume.data``'s grid.
        ``canvas``: the entry's canvas (:meth:`VolumeCanvas.read`), with ``canvas=`` set."""
        axis = self.slice_axis
        lab = torch.from_numpy(volume.data).movedim(axis, 0)  # (n, h, w)
        n, h, w = lab.shape
        fitted = self._fit_labels(lab)  # (n, S1, S2), on the original slices (empty check below)
        empty = self._is_empty(lab) if self.empty_slices == EmptySlices.FILL else torch.zeros(n, dtype=torch.bool)
        shape = (self.image_channels, *fitted.shape[1:])
        out = torch.empty((n, *shape))
        if isinstance(self.denoiser, nn.Module):
            self.denoiser.eval()
        todo = [i for i in range(n) if not bool(empty[i])]
        out[empty] = self.fill_value
        painted = None
        if self.canvas is not None:
            if canvas is None:
                raise ValueError(f"{volume.path}: this generator inpaints into a canvas: pass the entry's canvas")
            own = self._fit_labels(torch.from_numpy(canvas.labels).movedim(axis, 0))
            painted = (self.canvas.fit_slices(self.fit, canvas.image, axis), (fitted > 0) | (own > 0))

        def sample(chunk: list[int], previous: torch.Tensor | None, first: bool) -> torch.Tensor:
            seeds = [slice_noise_seed(volume_seed, i, self.noise) for i in chunk]
            cond, hooks = self._condition(fitted, chunk, previous, first), []
            if painted is not None:
                known, fg = painted[0][chunk], painted[1][chunk]
                cond = torch.cat([cond, self.canvas.known(known, fg).to(cond)], 1)
                hooks = [self.canvas.hook(known.to(self.device), fg, seeds)]
            return self.sampler(self.denoiser, cond, seeded_noise(shape, seeds, self.device), hooks=hooks).float().cpu()

        if self.mode == VolumeMode.INDEPENDENT:
            for start in range(0, len(todo), self.batch_size):
                chunk = todo[start : start + self.batch_size]
                out[chunk] = sample(chunk, None, True)
        else:
            previous: torch.Tensor | None = None
            for i in range(n):
                if not bool(empty[i]):
                    out[i] = sample([i], previous, i == 0)[0]
                previous = out[i : i + 1].clone()
                if self.progress and (i + 1) % 50 == 0:
                    logger.info(f"{volume.path}: slice {i + 1}/{n}")
        images = self._unfit(out, h, w)  # (n, C, h, w)
        if painted is not None:  # the canvas itself outside the final editable region, at the label's resolution
            region = self._unfit(self.canvas.hook(painted[0], painted[1], [0] * n).region(-1).float(), h, w)
            images = region * images + (1 - region) * canvas.image.movedim(axis + 1, 0).to(images)
        return images.movedim(0, axis + 1).contiguous()  # (C, ...) with n back at the slicing axis

    # --- all volumes ------------------------------------------------------------------------------------------------

    def read(self, entry: Mapping) -> LabelVolume:
        """Read and check one label volume (see :func:`~monai_siamese.data.volume.read_label_volume`)."""
        return read_label_volume(
            entry["label"], self.num_classes, self.label_mapping, self.label_threshold, axcodes=self.axcodes
        )

    def name(self, index: int, entry: Mapping, sample: int) -> str:
        """File stem of sample ``sample`` of label ``index``."""
        return pair_name(str(entry["label"]), -1, sample, mask_index=index)

    def run(self) -> dict[str, Any]:
        """Check every label first (fail in seconds), then generate and write what is not done; return the datalist
        and manifest paths and counts."""
        self.check_model()
        jobs = []
        for i, entry in enumerate(self.labels):
            names = [self.name(i, entry, k) for k in range(self.samples_per_label)]
            if all(self.writer.done(nm) for nm in names):
                self.writer.skipped += len(names)
                continue
            volume = self.read(entry)  # validation: 2D labels and unknown classes stop here, before any sampling
            if self.canvas is not None:
                self.canvas.read(entry, volume, self.num_classes, self.axcodes)  # a missing / misfit canvas too
            jobs.append((i, entry, names))
        started = time.time()
        for i, entry, names in jobs:
            volume = self.read(entry)
            canvas = self.canvas.read(entry, volume, self.num_classes, self.axcodes) if self.canvas else None
            lo, hi = self.units(entry, canvas.intensity_range if canvas is not None else None)
            for k, nm in enumerate(names):
                if self.writer.done(nm):
                    self.writer.skipped += 1
                    continue
                vseed = sample_seed(self.seed, i, k)
                image = self.generate(volume, vseed, canvas)  # (C, *data grid)
                arr = image.numpy()
                arr = arr[0] if arr.shape[0] == 1 else np.moveaxis(arr, 0, -1)
                arr = volume.to_file(arr)
                units = from_unit_range(torch.from_numpy(arr), lo, hi).numpy()
                record = {
                    "seed": vseed,
                    "sample_index": k,
                    "volume_index": i,
                    "source_label": str(entry["label"]),
                    "mode": self.mode.value,
                    "noise": self.noise.value,
                    "context_slices": self.context_slices,
                    "slice_axis": self.slice_axis,
                    "intensity_range": [lo, hi],
                    "num_inference_steps": self.sampler.num_inference_steps,
                    "guidance_scale": self.sampler.guidance_scale,
                }
                if entry.get("image"):
                    record["source_image"] = str(entry["image"])
                self.writer.write_volume(nm, units, volume.to_file(volume.data), volume.affine, record, (lo, hi))
                self.generated += 1
                if self.progress:
                    logger.info(f"volume {nm} written ({time.time() - started:.0f} s)")
        paths = self.writer.finalize({"counts": {"volumes_generated_this_run": self.generated}})
        return {**paths, "written": self.writer.written, "generated": self.generated}
