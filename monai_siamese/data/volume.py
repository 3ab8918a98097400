"""3D label volumes as generator input and synthetic volumes as output (NIfTI + datalist, atomic, resumable).

Output folder of :class:`SyntheticVolumeWriter` (the 2D writer's layout, one entry per volume)::

    images/<name>.nii.gz   labels/<name>.nii.gz   previews/<name>.png (orthogonal reformats)
    records/<name>.json    (written last: a volume counts as done only when its record exists)
    datalist.json          ({"training": [...3D entries marked "synthetic": true...]})
    manifest.json
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.transforms import LoadImage

from monai_siamese.data.datalist import load_datalist
from monai_siamese.data.io import save_nifti
from monai_siamese.data.labels import LabelValueError, map_label_values
from monai_siamese.data.reformat import reformat_tiles, tile_table
from monai_siamese.data.visualize import save_png
from monai_siamese.data.writer import SyntheticPairWriter
from monai_siamese.utils import atomic_write_json

__all__ = ["LabelVolume", "read_label_volume", "load_label_entries", "SyntheticVolumeWriter"]

logger = logging.getLogger(__name__)


@dataclass
class LabelVolume:
    """A 3D class map read for generation.

    Attributes:
        path: source file.
        data: ``(X, Y, Z)`` int64 classes in the slicing orientation (``axcodes``, RAS by default, as the training
            pipeline's ``OrientVolumed``).
        affine: 4x4 affine of the *file* (the output is written with exactly this affine and shape).
        shape: 3D shape of the file.
        ornt: nibabel orientation transform from the file's axes to ``data``'s axes (identity when not reoriented).
    """

    path: str
    data: np.ndarray
    affine: np.ndarray
    shape: tuple[int, int, int]
    ornt: np.ndarray

    def to_file(self, array: np.ndarray) -> np.ndarray:
        """Map an array on ``data``'s grid (``(X, Y, Z)`` or ``(X, Y, Z, C)``) back to the file's axes."""
        inv = np.zeros_like(self.ornt)
        for i, (j, flip) in enumerate(self.ornt):  # file axis i -> data axis j (flipped when -1)
            inv[int(j)] = (i, flip)
        out = nib.orientations.apply_orientation(np.asarray(array), inv)
        if tuple(out.shape[:3]) != self.shape:
            raise RuntimeError(f"{self.path}: reoriented output shape {out.shape[:3]} differs from {self.shape}")
        return np.ascontiguousarray(out)


def read_label_volume(
    path: str | os.PathLike,
    num_classes: int,
    label_mapping: Mapping[int, int] | None = None,
    label_threshold: float | None = None,
    axcodes: str | None = "RAS",
) -> LabelVolume:
    """Read a 3D label (NIfTI or anything MONAI's ``LoadImage`` reads), check it and map it to classes.

    Stops with one line naming the file when it is not a 3D volume (a 2D image, a single slice, 4D data) or holds
    values that are not classes ``0..num_classes-1`` (after ``label_mapping`` / ``label_threshold``, as in training).

    Args:
        path: label file.
        num_classes: classes the model was trained with (background included).
        label_mapping: explicit ``{value: class}`` remap.
        label_threshold: binarise at this value.
        axcodes: orientation of the slicing grid (None: the file's own axes).
    """
    path = str(path)
    img = LoadImage(image_only=True)(path)
    arr = img.detach().cpu().numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
    while arr.ndim > 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 3 or min(arr.shape) < 2:
        raise LabelValueError(f"{path}: expected a 3D label volume, got shape {tuple(arr.shape)}")
    affine = np.asarray(img.affine.cpu().numpy() if hasattr(img, "affine") else np.eye(4), dtype=np.float64)
    classes = map_label_values(arr, num_classes, label_mapping, label_threshold, name=path)
    identity = np.c_[np.arange(3), np.ones(3)]
    ornt = identity
    if axcodes:
        ornt = nib.orientations.ornt_transform(
            nib.orientations.io_orientation(affine), nib.orientations.axcodes2ornt(axcodes)
        )
    data = nib.orientations.apply_orientation(classes, ornt)
    return LabelVolume(path, np.ascontiguousarray(data), affine, tuple(int(s) for s in arr.shape), ornt)


def load_label_entries(
    datalist: str | os.PathLike, key: str = "masks", dataset_dir: str | os.PathLike | None = None
) -> list[dict]:
    """Entries of a datalist split with a ``label`` (and optionally an ``image``), paths made absolute: a list of
    label volumes to generate from is ``{"masks": [{"label": "labels/case1.nii.gz"}, ...]}``."""
    return load_datalist(datalist, key, dataset_dir, entry_key="label")


class SyntheticVolumeWriter(SyntheticPairWriter):
    """Writes synthetic 3D image/label volumes with the 2D writer's layout, records and resume logic.

    Args:
        output_dir: output folder (created); stale temporary files of a killed run are removed (as the 2D writer).
        method: generator name recorded in every entry.
        num_classes: classes including background.
        previews: write an orthogonal-reformat PNG per volume.
        config: configuration recorded in the manifest.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        method: str,
        num_classes: int,
        previews: bool = True,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(output_dir, method, num_classes, image_format="nifti", previews=previews, config=config)

    def write_volume(
        self,
        name: str,
        image: np.ndarray,
        label: np.ndarray,
        affine: np.ndarray,
        record: Mapping[str, Any] | None = None,
        preview_range: tuple[float, float] | None = None,
    ) -> dict:
        """Write one volume unless it is already done; return its datalist entry.

        Args:
            name: file stem.
            image: ``(X, Y, Z)`` (or ``(X, Y, Z, C)``) image in the units to store, on the label file's grid.
            label: ``(X, Y, Z)`` integer classes on the same grid.
            affine: the label file's 4x4 affine.
            record: extra fields for the entry (seed, source_label, mode...).
            preview_range: intensities shown black..white in the preview (default: the image's 0.5-99.5 %).
        """
        if self.done(name):
            self.skipped += 1
            return json.loads(self.record_path(name).read_text())
        img_rel, lab_rel = f"images/{name}.nii.gz", f"labels/{name}.nii.gz"
        lab_dtype = np.uint8 if self.num_classes <= 255 else np.int16
        save_nifti(np.asarray(image, dtype=np.float32), affine, self.root / img_rel)
        save_nifti(np.asarray(label).astype(lab_dtype), affine, self.root / lab_rel)
        entry: dict[str, Any] = {"image": img_rel, "label": lab_rel, "synthetic": True, "method": self.method}
        entry.update(dict(record or {}))
        if self.previews:
            img3 = np.asarray(image, dtype=np.float32)
            img3 = img3[..., 0] if img3.ndim == 4 else img3
            lo, hi = preview_range or tuple(float(v) for v in np.percentile(img3, [0.5, 99.5]))
            rows = [
                reformat_tiles(img3, affine, lo, hi),
                reformat_tiles(img3, affine, lo, hi, label=label, show="overlay"),
            ]
            save_png(tile_table(rows), self.root / "previews" / f"{name}.png")
            entry["preview"] = f"previews/{name}.png"
        atomic_write_json(self.record_path(name), entry)
        self.written += 1
        return entry
