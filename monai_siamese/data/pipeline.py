"""Ready-made MONAI transform chains: load + normalise a pair, fit a slice to the model size, build datasets."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import (
    Compose,
    EnsureTyped,
    LoadImaged,
    MapTransform,
    Orientation,
    Resize,
    Resized,
    ResizeWithPadOrCropd,
)

from monai_siamese.data.intensity import IntensityPreset, ScaleIntensityPresetd
from monai_siamese.data.labels import LabelMapd
from monai_siamese.data.slicing import SliceDataset

__all__ = ["OrientVolumed", "pair_load_transform", "fit_slice_transform", "unfit_slices", "build_slice_dataset"]


class OrientVolumed(MapTransform):
    """Reorient 3D volumes to ``axcodes`` (RAS by default) so slicing axes mean the same for every file; 2D
    images pass unchanged."""

    def __init__(self, keys: KeysCollection, axcodes: str = "RAS", allow_missing_keys: bool = True) -> None:
        super().__init__(keys, allow_missing_keys)
        self.orient = Orientation(axcodes=axcodes, labels=None)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            if d[key].ndim == 4:
                d[key] = self.orient(d[key])
        return d


def pair_load_transform(
    num_classes: int,
    preset: IntensityPreset | str = IntensityPreset.MR,
    window: Sequence[float] = (-160.0, 240.0),
    percentiles: Sequence[float] = (0.5, 99.5),
    label_mapping: Mapping[int, int] | None = None,
    label_threshold: float | None = None,
    axcodes: str | None = "RAS",
    image_key: str = "image",
    label_key: str = "label",
    grey: bool = True,
    extra_label_keys: Sequence[str] = (),
) -> Compose:
    """Load an image/label pair (NIfTI, DICOM series folder, PNG/JPG/TIFF) channel-first, map the label to
    classes, and scale the image to [-1, 1] with a preset.

    Args:
        num_classes: classes including background.
        preset: intensity preset (``ct``, ``mr``, ``rgb``, ``grey``, ``minmax``).
        window: CT window in HU.
        percentiles: MR percentiles.
        label_mapping: explicit ``{value: class}`` remap.
        label_threshold: binarise lossy masks at this value.
        axcodes: reorient 3D volumes (None keeps the file's orientation).
        image_key: image key.
        label_key: label key.
        grey: for the ``grey`` preset, average colour channels of 2D images into one.
        extra_label_keys: further label keys loaded and mapped like ``label_key`` when an entry has them (e.g.
            ``canvas_label``, the mask matching an inpainting canvas).
    """
    label_keys = [label_key, *extra_label_keys]
    keys = [image_key, *label_keys]
    xforms: list = [LoadImaged(keys, image_only=True, ensure_channel_first=True, allow_missing_keys=True)]
    if axcodes:
        xforms.append(OrientVolumed(keys, axcodes=axcodes))
    xforms.append(
        LabelMapd(
            label_keys,
            num_classes=num_classes,
            mapping=label_mapping,
            threshold=label_threshold,
            allow_missing_keys=True,
        )
    )
    if IntensityPreset(preset) == IntensityPreset.GREY and grey:
        xforms.append(_MeanChannelsd(image_key, allow_missing_keys=True))
    xforms.append(
        ScaleIntensityPresetd(image_key, preset=preset, window=window, percentiles=percentiles, allow_missing_keys=True)
    )
    xforms.append(EnsureTyped(image_key, dtype=torch.float32, track_meta=True, allow_missing_keys=True))
    return Compose(xforms)


class _MeanChannelsd(MapTransform):
    """Average the channels of an RGB(A) 2D image into one grey channel."""

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            if img.shape[0] > 1:
                d[key] = img[:3].float().mean(0, keepdim=True)
        return d


def fit_slice_transform(
    spatial_size: int | Sequence[int],
    image_key: str = "image",
    label_key: str = "label",
    keep_aspect: bool = True,
    extra_label_keys: Sequence[str] = (),
) -> Compose:
    """Fit a 2D slice to the model size: resize (longest side, keeping the aspect ratio) and pad with the
    background value (-1 for images, 0 for labels). MONAI updates the affine, so geometry stays true.

    Args:
        spatial_size: output size (int for square).
        image_key: image key.
        label_key: label key.
        keep_aspect: resize the longest side and pad (True) or stretch to the size (False).
        extra_label_keys: further label keys fitted like ``label_key`` when present.
    """
    size = (spatial_size, spatial_size) if isinstance(spatial_size, int) else tuple(spatial_size)
    label_key = [label_key, *extra_label_keys]
    if keep_aspect:
        return Compose(
            [
                Resized(image_key, spatial_size=max(size), size_mode="longest", mode="area", allow_missing_keys=True),
                Resized(
                    label_key, spatial_size=max(size), size_mode="longest", mode="nearest", allow_missing_keys=True
                ),
                ResizeWithPadOrCropd(image_key, spatial_size=size, mode="constant", value=-1, allow_missing_keys=True),
                ResizeWithPadOrCropd(label_key, spatial_size=size, mode="constant", value=0, allow_missing_keys=True),
            ]
        )
    return Compose(
        [
            Resized(image_key, spatial_size=size, mode="area", allow_missing_keys=True),
            Resized(label_key, spatial_size=size, mode="nearest", allow_missing_keys=True),
        ]
    )


def unfit_slices(images: torch.Tensor, shape: Sequence[int], keep_aspect: bool = True) -> torch.Tensor:
    """Undo :func:`fit_slice_transform` on generated slices ``(..., S1, S2)`` (the model grid) -> ``(..., *shape)``
    (the source slice grid): crop the padding, resize back (bilinear, anti-aliased when shrinking).

    The content box is found by fitting an all-ones ``shape`` image with the same transform, so the crop follows
    MONAI's own rounding and padding split exactly (the one inverse for pairs and volumes).
    """
    shape, size = tuple(int(v) for v in shape), tuple(images.shape[-2:])
    ones = fit_slice_transform(size, keep_aspect=keep_aspect)({"image": MetaTensor(torch.ones(1, *shape))})["image"]
    inside = torch.as_tensor(ones)[0] > 0
    rows, cols = torch.nonzero(inside.any(1)).flatten(), torch.nonzero(inside.any(0)).flatten()
    crop = images[..., int(rows[0]) : int(rows[-1]) + 1, int(cols[0]) : int(cols[-1]) + 1]
    if tuple(crop.shape[-2:]) == shape:
        return crop
    flat = crop.reshape(-1, *crop.shape[-2:]).float()
    out = torch.as_tensor(Resize(shape, mode="bilinear", anti_aliasing=True)(flat))
    return out.reshape(*crop.shape[:-2], *shape).to(images.dtype)


def build_slice_dataset(
    data: Sequence[dict],
    num_classes: int,
    spatial_size: int | Sequence[int],
    preset: IntensityPreset | str = IntensityPreset.MR,
    axis: int = 2,
    min_foreground: float = 1,
    foreground_classes: Sequence[int] | None = None,
    transform: Any = None,
    window: Sequence[float] = (-160.0, 240.0),
    percentiles: Sequence[float] = (0.5, 99.5),
    label_mapping: Mapping[int, int] | None = None,
    label_threshold: float | None = None,
    num_workers: int = 0,
    max_slices: int | None = None,
) -> SliceDataset:
    """One call from a datalist split to a cached :class:`SliceDataset` (what the bundles use).

    Args:
        data: datalist entries.
        num_classes: classes including background.
        spatial_size: model input size.
        preset: intensity preset.
        axis: slicing axis for 3D volumes.
        min_foreground: minimum foreground per kept slice (pixels, or a fraction when < 1).
        foreground_classes: classes counted as foreground.
        transform: random per-access transform.
        window: CT window.
        percentiles: MR percentiles.
        label_mapping: label remap.
        label_threshold: binarisation threshold for lossy masks.
        num_workers: loader threads.
        max_slices: cap on the number of cached slices.
    """
    return SliceDataset(
        data=data,
        load_transform=pair_load_transform(
            num_classes,
            preset=preset,
            window=window,
            percentiles=percentiles,
            label_mapping=label_mapping,
            label_threshold=label_threshold,
        ),
        axis=axis,
        min_foreground=min_foreground,
        foreground_classes=foreground_classes,
        slice_transform=fit_slice_transform(spatial_size),
        transform=transform,
        num_workers=num_workers,
        max_slices=max_slices,
    )
