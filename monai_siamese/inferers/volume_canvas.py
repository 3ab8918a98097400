"""MedDiff-FT's inpainting lifted to volumes: each slice of a label volume is generated inside the editable region of
its structures, in a real canvas volume, the anatomy outside kept (Xie et al., MedDiff-FT, arXiv 2507.00377).

A MedDiff-FT model is conditioned on ``[mask condition | known canvas outside the editable region]`` and sampled
with the dynamic guiding mask (:class:`~monai_siamese.inferers.DynamicGuidingMask`). For a volume the canvas is a
real image volume on the label's grid (the label's own image, or any image of the same shape and orientation):
:class:`VolumeCanvas` reads it with the training intensity preset, fits its slices as training fits slices and gives,
per batch of slices, the known part of the condition and the guiding hook. The mask part (with 2.5D context) is
:class:`~monai_siamese.inferers.VolumeGenerator`'s, so a MedDiff-FT model trained with ``context.json`` generates
slice-consistent volumes like the other generators.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor
from monai.networks.schedulers import Scheduler
from monai.transforms import Compose, LoadImage

from monai_siamese.data.intensity import RANGE_KEY, IntensityPreset, ScaleIntensityPresetd
from monai_siamese.data.volume import LabelVolume, read_label_volume
from monai_siamese.errors import InputError
from monai_siamese.inferers.guiding import DynamicGuidingMask
from monai_siamese.transforms.morphology import editable_region

__all__ = ["CanvasVolume", "VolumeCanvas"]


class CanvasVolume(NamedTuple):
    """A canvas read for one label volume (:meth:`VolumeCanvas.read`), on the label's slicing grid."""

    image: torch.Tensor  # (C, X, Y, Z) in [-1, 1]
    labels: np.ndarray  # (X, Y, Z) the canvas's own classes (editable too)
    intensity_range: tuple[float, float]  # the (lo, hi) of the canvas's units that [-1, 1] maps to


class VolumeCanvas:
    """The canvas of MedDiff-FT volume generation (see the module docstring).

    A label entry names its canvas under ``image``; ``canvas_label`` (default: the label itself, right when the
    canvas is the label's own image) is the canvas's own structure map, whose foreground is editable too, so the
    canvas's original structures cannot survive outside a new label's structures.

    Args:
        scheduler: the sampling scheduler (the guiding hook noises the canvas to each step's level).
        preset: intensity preset of training.
        window: CT window in HU (``ct``).
        percentiles: MR percentiles.
        margin_fraction: editable-region margin at ``t = T`` (fraction of the structure size); also the margin of
            the condition's known image, as :class:`~monai_siamese.inferers.InpaintJobs`.
        min_margin: final margin in pixels.
        power: shrink profile of the guiding mask.
        fill_value: value of the known image inside the region (training's ``InpaintConditiond`` ``fill_value``).
    """

    def __init__(
        self,
        scheduler: Scheduler,
        preset: IntensityPreset | str = IntensityPreset.MR,
        window: Sequence[float] = (-160.0, 240.0),
        percentiles: Sequence[float] = (0.5, 99.5),
        margin_fraction: float = 0.15,
        min_margin: float = 1.0,
        power: float = 1.0,
        fill_value: float = 0.0,
    ) -> None:
        self.scheduler = scheduler
        self.scale = ScaleIntensityPresetd("image", preset=preset, window=window, percentiles=percentiles)
        self.margin_fraction = margin_fraction
        self.min_margin = min_margin
        self.power = power
        self.fill_value = fill_value

    def read(self, entry: Mapping, volume: LabelVolume, num_classes: int, axcodes: str | None = "RAS") -> CanvasVolume:
        """The canvas of ``entry`` on ``volume.data``'s grid, ``(C, X, Y, Z)`` in [-1, 1], the canvas's own class
        map on that grid and the canvas's intensity range. Stops with one line naming the file when the entry has no
        ``image`` or the image is not on the label's grid."""
        path = entry.get("image")
        if not path:
            raise InputError(
                f"{entry.get('label')}: meddiff_ft inpaints into a real image: give the label's canvas volume "
                "(an 'image' in the datalist entry, or --image)"
            )
        try:
            img_meta = LoadImage(image_only=True)(str(path))
            img = np.asarray(img_meta, dtype=np.float32)
        except Exception as e:  # noqa: BLE001 - any reader failure is a bad input file
            raise InputError(f"{path}: cannot read the canvas image: {e}") from e
        if img.ndim == 4 and img.shape[-1] == 1:
            img = img[..., 0]
        if img.ndim != 3 or tuple(img.shape) != tuple(volume.shape):
            raise InputError(
                f"{path}: canvas shape {tuple(img.shape)} differs from the label's {tuple(volume.shape)} "
                f"({volume.path}); the canvas must lie on the label's grid"
            )
        affine = np.asarray(getattr(img_meta, "affine", volume.affine), dtype=np.float64)
        if not np.allclose(affine, volume.affine, atol=1e-3):
            raise InputError(f"{path}: canvas affine differs from the label's ({volume.path}): not on the label's grid")
        data = nib.orientations.apply_orientation(img, volume.ornt)
        scaled = self.scale({"image": torch.from_numpy(np.ascontiguousarray(data))[None]})
        own = volume.data
        if entry.get("canvas_label"):  # the canvas's own structures, when they are not the label's
            own = read_label_volume(entry["canvas_label"], num_classes, axcodes=axcodes).data
            if own.shape != volume.data.shape:
                raise InputError(
                    f"{entry['canvas_label']}: canvas label shape differs from the label's ({volume.path})"
                )
        lo, hi = (float(v) for v in scaled[RANGE_KEY])
        return CanvasVolume(torch.as_tensor(scaled["image"]).float(), np.asarray(own), (lo, hi))

    @staticmethod
    def fit_slices(fit: Compose, canvas: torch.Tensor, axis: int) -> torch.Tensor:
        """``(C, X, Y, Z)`` canvas -> ``(n, C, S1, S2)`` slices along ``axis`` fitted as training fits images."""
        slices = canvas.movedim(axis + 1, 0)  # (n, C, h, w)
        n, c = slices.shape[:2]
        fitted = fit({"image": MetaTensor(slices.reshape(n * c, *slices.shape[2:]))})["image"]
        return torch.as_tensor(fitted).reshape(n, c, *fitted.shape[1:]).float()

    def known(self, canvas: torch.Tensor, foreground: torch.Tensor) -> torch.Tensor:
        """The condition's known image ``(B, C, S1, S2)``: the canvas outside the editable region of ``foreground``
        ``(B, S1, S2)`` (margin ``margin_fraction`` of the structure size, as the sampler's final guiding mask)."""
        regions = [
            torch.from_numpy(
                editable_region(f.numpy() > 0, self.margin_fraction, self.min_margin)[0].astype(np.float32)
            )
            for f in foreground.cpu()
        ]
        region = torch.stack(regions)[:, None].to(canvas)
        return canvas * (1 - region) + self.fill_value * region

    def hook(self, canvas: torch.Tensor, foreground: torch.Tensor, seeds: Sequence[int]) -> DynamicGuidingMask:
        """The dynamic guiding mask of a batch of slices (canvas ``(B, C, S1, S2)``, foreground ``(B, S1, S2)``)."""
        return DynamicGuidingMask(
            canvas, foreground[:, None].float(), self.scheduler, self.margin_fraction, self.min_margin, self.power,
            [int(s) for s in seeds],
        )  # fmt: skip
