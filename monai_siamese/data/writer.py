"""Write synthetic image/label pairs: NIfTI with real geometry, PNG previews, a MONAI datalist and a manifest.

Layout of an output folder::

    images/<name>.nii.gz    labels/<name>.nii.gz    previews/<name>.png
    records/<name>.json     (written last: a pair counts as done only when its record exists)
    datalist.json           ({"training": [...entries marked "synthetic": true...]})
    manifest.json           (config, versions, counts, filter statistics)

Every file is written to a temporary name and renamed, so an interrupted run leaves no half-written pair; a
rerun skips the pairs whose records exist and never overwrites them.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

from monai_siamese.data.datalist import write_datalist
from monai_siamese.data.io import save_nifti, save_png_array
from monai_siamese.data.visualize import grid, label_to_rgb, overlay, save_png, to_uint8
from monai_siamese.utils import atomic_write_json, remove_stale_temporaries, versions

__all__ = ["SyntheticPairWriter", "pair_name", "slice_name", "SaveSliceLabeld"]


def pair_name(source: str, slice_index: int, sample_index: int, mask_index: int | None = None) -> str:
    """Deterministic file stem for sample ``sample_index`` of a source mask (slice); ``mask_index`` keeps names
    unique when sources share a file name (``case1/label.nii.gz``, ``case2/label.nii.gz``)."""
    stem = Path(str(source)).name
    for ext in (".nii.gz", ".nii", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".dcm"):
        if stem.lower().endswith(ext):
            stem = stem[: -len(ext)]
            break
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in stem) or "mask"
    sl = f"_z{slice_index:04d}" if slice_index is not None and int(slice_index) >= 0 else ""
    prefix = f"{mask_index:05d}_" if mask_index is not None else ""
    return f"{prefix}{stem}{sl}_{sample_index:03d}"


def slice_name(source: str, slice_index: int | None = None, postfix: str = "") -> str:
    """File stem of a 2D slice (or 2D image) of ``source``: ``<stem>_z0042`` for slice 42 of a volume, ``<stem>``
    for a 2D image, then ``_<postfix>`` when given."""
    stem = pair_name(source, -1 if slice_index is None else slice_index, 0)[: -len("_000")]
    return f"{stem}_{postfix}" if postfix else stem


class SaveSliceLabeld(MapTransform):
    """Save a predicted 2D label (``(1, H, W)`` class map with its affine, e.g. after ``Invertd``) as NIfTI,
    atomically, named after the source file and slice (:func:`slice_name`), into ``output_dir``.

    Slices of the same volume get distinct names (``<stem>_z0042_seg.nii.gz``), which MONAI's ``SaveImaged``
    (one file per source file name) cannot do. The path written is stored under ``<key>_path``.

    Args:
        keys: keys of the labels to save.
        output_dir: output folder.
        postfix: file name postfix.
        source_key: item key with the source image path (set by :class:`~monai_siamese.data.SliceDataset`).
        slice_key: item key with the slice index (-1 for 2D images).
        dtype: stored integer type.
        allow_missing_keys: skip missing keys.
    """

    def __init__(
        self,
        keys: KeysCollection,
        output_dir: str | os.PathLike,
        postfix: str = "seg",
        source_key: str = "source_image",
        slice_key: str = "slice_index",
        dtype: Any = np.uint8,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.output_dir = Path(output_dir)
        self.postfix = postfix
        self.source_key = source_key
        self.slice_key = slice_key
        self.dtype = dtype

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        source = str(d.get(self.source_key) or "image")
        sl = d.get(self.slice_key, -1)
        sl = int(sl.item() if isinstance(sl, torch.Tensor) else sl)
        name = slice_name(source, sl, self.postfix)
        for key in self.key_iterator(d):
            lab = d[key]
            affine = getattr(lab, "affine", None)
            arr = torch.as_tensor(lab).detach().cpu()
            arr = arr[0] if arr.ndim == 3 else arr
            path = self.output_dir / f"{name}.nii.gz"
            save_nifti(arr.numpy().astype(self.dtype), np.eye(4) if affine is None else affine, path)
            d[f"{key}_path"] = str(path)
        return d


class SyntheticPairWriter:
    """Writes synthetic pairs into ``output_dir`` (see the module docstring for the layout).

    Args:
        output_dir: output folder (created).
        method: generator name recorded in every entry.
        num_classes: classes including background (label dtype, preview colours).
        image_format: ``nifti``, ``png`` or ``auto`` (PNG for 3-channel images, NIfTI otherwise).
        previews: write a PNG preview per pair.
        config: configuration recorded in the manifest.

    On construction, the temporary files that a killed run of a writer left in this folder and its sub-folders are
    removed (only :func:`~monai_siamese.utils.atomic_path` temporaries whose process no longer runs).
    """

    SUBFOLDERS = ("images", "labels", "previews", "records", "rejected")

    def __init__(
        self,
        output_dir: str | os.PathLike,
        method: str,
        num_classes: int,
        image_format: str = "auto",
        previews: bool = True,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        self.root = Path(output_dir)
        self.method = method
        self.num_classes = num_classes
        self.image_format = image_format
        self.previews = previews
        self.config = dict(config or {})
        for sub in ("images", "labels", "previews", "records"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        # what a killed run left half-written: temporaries of atomic_path whose process is gone (never a live one's)
        folders = [self.root, *(self.root / sub for sub in self.SUBFOLDERS)]
        self.removed_temporaries = remove_stale_temporaries(folders)
        self.written = 0
        self.skipped = 0
        self.started = time.time()

    def record_path(self, name: str) -> Path:
        return self.root / "records" / f"{name}.json"

    def rejected_path(self, name: str) -> Path:
        return self.root / "rejected" / f"{name}.json"

    def done(self, name: str) -> bool:
        """Whether the pair ``name`` was completely written by this or an earlier run."""
        return self.record_path(name).is_file()

    def is_rejected(self, name: str) -> bool:
        """Whether a quality filter rejected the pair ``name`` in this or an earlier run."""
        return self.rejected_path(name).is_file()

    def reject(self, name: str, reason: str, record: Mapping[str, Any] | None = None) -> None:
        """Remember that ``name`` was generated and rejected (so a rerun does not redo it), with the reason."""
        atomic_write_json(self.rejected_path(name), {"name": name, "reason": reason, **dict(record or {})})

    def rejections(self) -> dict[str, int]:
        """Rejected pairs counted by reason (this and earlier runs)."""
        counts: dict[str, int] = {}
        folder = self.root / "rejected"
        if folder.is_dir():
            for p in folder.glob("[!.]*.json"):  # not a temporary of atomic_path
                reason = json.loads(p.read_text()).get("reason", "unknown")
                counts[reason] = counts.get(reason, 0) + 1
        return dict(sorted(counts.items()))

    def _format(self, image: torch.Tensor) -> str:
        if self.image_format != "auto":
            return self.image_format
        return "png" if image.shape[0] == 3 else "nifti"

    def write(
        self,
        name: str,
        image: torch.Tensor,
        label: torch.Tensor,
        affine: torch.Tensor | np.ndarray | None,
        record: Mapping[str, Any] | None = None,
        preview_image: torch.Tensor | None = None,
        preview_range: tuple[float, float] = (-1.0, 1.0),
    ) -> dict:
        """Write one pair unless it is already done; return its datalist entry.

        Args:
            name: file stem (see :func:`pair_name`).
            image: ``(C, H, W)`` image in the units to store (source units).
            label: ``(1, H, W)`` or ``(H, W)`` integer label.
            affine: 4x4 RAS affine of the slice (identity when None).
            record: extra fields for the entry (seed, source_mask, ...).
            preview_image: image used for the preview (default ``image``), in ``preview_range``.
            preview_range: intensity range mapped to black..white in the preview.
        """
        if self.done(name):
            self.skipped += 1
            return json.loads(self.record_path(name).read_text())
        image = image.detach().cpu().float()
        label = label.detach().cpu()
        lab2d = (label[0] if label.ndim == 3 else label).numpy()
        lab_dtype = np.uint8 if self.num_classes <= 255 else np.int16
        aff = np.eye(4) if affine is None else np.asarray(torch.as_tensor(affine).cpu(), dtype=np.float64)
        fmt = self._format(image)
        if fmt == "png":
            img_rel, lab_rel = f"images/{name}.png", f"labels/{name}.png"
            arr = image.clamp(0, 255).round().to(torch.uint8).numpy()
            save_png_array(arr[0] if arr.shape[0] == 1 else np.moveaxis(arr, 0, -1), self.root / img_rel)
            save_png_array(lab2d.astype(np.uint8), self.root / lab_rel)
        else:
            img_rel, lab_rel = f"images/{name}.nii.gz", f"labels/{name}.nii.gz"
            arr = image.numpy()
            arr = arr[0] if arr.shape[0] == 1 else np.moveaxis(arr, 0, -1)[:, :, None, :]
            save_nifti(arr.astype(np.float32), aff, self.root / img_rel)
            save_nifti(lab2d.astype(lab_dtype), aff, self.root / lab_rel)
        entry: dict[str, Any] = {"image": img_rel, "label": lab_rel, "synthetic": True, "method": self.method}
        entry.update(dict(record or {}))
        if self.previews:
            shown = preview_image if preview_image is not None else image
            lo, hi = preview_range
            tiles = [label_to_rgb(lab2d), to_uint8(shown, lo, hi), overlay(to_uint8_range(shown, lo, hi), lab2d)]
            save_png(grid([tiles]), self.root / "previews" / f"{name}.png")
            entry["preview"] = f"previews/{name}.png"
        atomic_write_json(self.record_path(name), entry)
        self.written += 1
        return entry

    def entries(self) -> list[dict]:
        """All completed entries in this folder (this run's and earlier runs'), sorted by name."""
        out = []
        for p in sorted((self.root / "records").glob("[!.]*.json")):  # not a temporary of atomic_path
            out.append(json.loads(p.read_text()))
        return out

    def finalize(self, extra: Mapping[str, Any] | None = None) -> dict[str, str]:
        """Write ``datalist.json`` and ``manifest.json`` from the completed records; return their paths."""
        entries = self.entries()
        datalist = write_datalist(
            self.root / "datalist.json",
            {"training": entries},
            relative=False,
            extra={"name": f"synthetic pairs ({self.method})", "num_classes": self.num_classes},
        )
        manifest = {
            "method": self.method,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "versions": versions(),
            "counts": {
                "pairs_total": len(entries),
                "written_this_run": self.written,
                "skipped_existing": self.skipped,
                "rejected_by_reason": self.rejections(),
            },
            "seconds_this_run": round(time.time() - self.started, 2),
            "config": self.config,
        }
        if extra:
            for k, v in extra.items():
                if k == "counts" and isinstance(v, Mapping):
                    manifest["counts"].update(v)
                else:
                    manifest[k] = v
        manifest_path = self.root / "manifest.json"
        atomic_write_json(manifest_path, manifest)
        return {"datalist": datalist, "manifest": str(manifest_path)}


def to_uint8_range(image: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """Rescale ``image`` from ``[lo, hi]`` to ``[-1, 1]`` (what :func:`overlay` expects)."""
    return (image.float() - lo) / max(hi - lo, 1e-8) * 2 - 1
