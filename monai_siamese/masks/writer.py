"""Read a regime's masks from a MONAI datalist, make conditioning masks with a source, and write them as NIfTI
(the geometry of their source mask) plus a MONAI datalist that every generator bundle can read.

Output folder::

    labels/<name>.nii.gz     the new masks (affine of the first source mask)
    images/<name>.nii.gz     their canvases (the source image, moved with the mask for ``augmented``)
    records/<index>.json     one per mask index, written last (dropped masks too): what a rerun skips
    datalist.json            {split: [{"image", "label", "mask_source", "source_mask", "mask_params", ...}]}

Each entry's ``image`` is a canvas for generators that inpaint (MedDiff-FT). For ``regime`` and ``augmented`` masks
the canvas matches the new mask (the image moved with it); for ``generated`` and ``interpolated`` masks it is the
first source's image unchanged, and ``canvas_label`` (absolute path) names the mask that matches it, so an inpainter
can make the union of both foregrounds editable.
    manifest.json            the arguments, versions and counts (written, dropped, rejected draws by reason)

The folder is built as ``.<name>.partial`` next to ``out_dir`` and renamed when complete: an interrupted run
resumes in the partial folder (masks depend only on ``(seed, index)``), a rerun with the same arguments returns
the finished folder unchanged, and a source that yields no usable mask leaves nothing behind.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.transforms import Compose, LoadImaged

from monai_siamese.data.datalist import load_datalist, read_datalist_file, write_datalist
from monai_siamese.data.io import save_nifti
from monai_siamese.data.labels import LabelMapd
from monai_siamese.data.pipeline import OrientVolumed
from monai_siamese.data.slicing import iter_slices
from monai_siamese.data.writer import slice_name
from monai_siamese.masks.base import BaseMaskSource, MaskSample, MaskSource, MaskSourceError, RegimeMask
from monai_siamese.masks.sources import build_mask_source, parse_mask_source
from monai_siamese.utils import atomic_write_json, versions

__all__ = ["MaskDatalist", "load_regime_masks", "write_mask_datalist", "context_mask_source"]

logger = logging.getLogger(__name__)

#: bump when the masks made for the same arguments change (a finished folder of another version is not reused)
MASKS_VERSION = 1


@dataclass
class MaskDatalist:
    """What :func:`write_mask_datalist` wrote.

    Args:
        datalist: path of ``datalist.json``.
        split: its split holding the masks.
        manifest: path of ``manifest.json``.
        counts: ``requested``, ``written``, ``dropped``, per-kind counts and rejected draws by reason.
        reused: True when a finished folder with the same arguments was returned unchanged.
    """

    datalist: str
    split: str
    manifest: str
    counts: dict[str, Any] = field(default_factory=dict)
    reused: bool = False


def _affine4(affine: Any) -> np.ndarray:
    a = np.asarray(affine.detach().cpu() if isinstance(affine, torch.Tensor) else affine, dtype=np.float64)
    if a.shape == (4, 4):
        return a
    if a.shape == (3, 3):  # 2D affine: embed with an identity third axis
        out = np.eye(4)
        out[:2, :2], out[:2, 3] = a[:2, :2], a[:2, 2]
        return out
    raise ValueError(f"expected a 3x3 or 4x4 affine, got shape {a.shape}")


def _regime_mask(item: Mapping[str, Any], entry: Mapping[str, Any]) -> RegimeMask:
    lab = item["label"]
    img = item.get("image")
    affine = getattr(lab, "affine", None)
    slice_index = int(item.get("slice_index", entry.get("slice_index", -1)))
    return RegimeMask(
        label=torch.as_tensor(lab)[0].cpu().numpy(),
        image=None if img is None else torch.as_tensor(img).float().cpu().numpy(),
        affine=np.eye(4) if affine is None else _affine4(affine),
        label_path=str(entry["label"]),
        image_path=str(entry.get("image", "")),
        slice_index=slice_index,
    )


def load_regime_masks(
    regime_datalist: str | os.PathLike,
    num_classes: int,
    split: str = "training",
    dataset_dir: str | os.PathLike | None = None,
    label_mapping: Mapping[int, int] | None = None,
    label_threshold: float | None = None,
    slice_axis: int | None = None,
    min_foreground: float = 1,
) -> list[RegimeMask]:
    """The regime's masks and images (source units) with their geometry, in datalist order.

    Files are loaded as the data layer does (``LoadImaged`` channel-first, 3D volumes reoriented to RAS, labels
    mapped to classes by :class:`~monai_siamese.data.LabelMapd`); images keep their intensities, so canvases are
    written in source units.

    Args:
        regime_datalist: datalist of the regime (its ``split`` holds the N real pairs).
        num_classes: classes including background.
        split: split of the regime's pairs.
        dataset_dir: base folder of relative paths.
        label_mapping: ``{value: class}`` remap.
        label_threshold: binarisation threshold of lossy masks.
        slice_axis: None keeps masks as they are (2D files give 2D masks, volumes 3D masks); an axis cuts volumes
            into 2D slices with enough foreground (see :func:`~monai_siamese.data.iter_slices`).
        min_foreground: foreground pixels (or fraction) a slice needs when slicing.
    """
    entries = load_datalist(regime_datalist, split, dataset_dir, entry_key="label")
    missing = [i for i, e in enumerate(entries) if not e.get("label")]
    if missing:
        raise ValueError(f"{regime_datalist}: entries {missing} of '{split}' have no 'label'")
    keys = ["image", "label"]
    load = Compose(
        [
            LoadImaged(keys, image_only=True, ensure_channel_first=True, allow_missing_keys=True),
            OrientVolumed(keys),
            LabelMapd("label", num_classes=num_classes, mapping=label_mapping, threshold=label_threshold),
        ]
    )
    out: list[RegimeMask] = []
    for entry in entries:
        item = load({k: entry[k] for k in keys if entry.get(k)})
        if slice_axis is None:
            out.append(_regime_mask(item, entry))
        else:
            out.extend(_regime_mask(s, entry) for s in iter_slices(item, int(slice_axis), min_foreground))
    return out


def _num_classes(regime_datalist: str | os.PathLike, num_classes: int | None) -> int:
    if num_classes is not None:
        return int(num_classes)
    content = read_datalist_file(regime_datalist)
    if "num_classes" in content:
        return int(content["num_classes"])
    if isinstance(content.get("labels"), Mapping):
        return len(content["labels"])
    raise ValueError(f"{regime_datalist}: give num_classes (the datalist has no 'num_classes' or 'labels')")


def _source_spec(source: Any, options: Mapping[str, Any] | None) -> dict[str, Any]:
    if isinstance(source, BaseMaskSource):
        return {"source": source.name, "source_class": f"{type(source).__module__}.{type(source).__qualname__}"}
    weights = parse_mask_source(source)
    return {"source": {k.value: w for k, w in weights.items()}, "options": dict(options or {})}


def _write_image(image: np.ndarray, affine: np.ndarray, path: Path) -> None:
    arr = image[0] if image.shape[0] == 1 else np.moveaxis(image, 0, -1)
    if image.shape[0] > 1 and image.ndim == 3:  # 2D multi-channel: (H, W, 1, C), as SyntheticPairWriter writes
        arr = arr[:, :, None, :]
    save_nifti(arr.astype(np.float32), affine, path)


def _record(sample: MaskSample, regime: Sequence[RegimeMask], name: str, seed: int, has_image: bool) -> dict:
    first = regime[sample.sources[0]]
    rec: dict[str, Any] = {
        "index": sample.index,
        "accepted": sample.accepted,
        "mask_source": sample.kind,
        "mask_index": sample.index,
        "mask_seed": sample.seed,
        "seed": int(seed),
        "source_mask": first.label_path,
        "source_masks": [regime[k].label_path for k in sample.sources],
        "source_images": [regime[k].image_path for k in sample.sources],
        "source_slices": [regime[k].slice_index for k in sample.sources],
        "source_indices": list(sample.sources),
        "mask_params": sample.params,
        "tries": sample.tries,
        "rejected": list(sample.rejected),
    }
    if sample.accepted:
        rec["label"] = f"labels/{name}.nii.gz"
        if has_image:
            rec["image"] = f"images/{name}.nii.gz"
            if sample.kind in (MaskSource.GENERATED.value, MaskSource.INTERPOLATED.value):
                # the canvas is the source image unchanged: its own label is the source mask, not the new one
                rec["canvas_label"] = first.label_path
        if sample.kind != MaskSource.INTERPOLATED.value and first.slice_index >= 0:
            rec["slice_index"] = first.slice_index
    else:
        rec["problems"] = list(sample.problems)
    return rec


def _counts(records: Sequence[Mapping[str, Any]], requested: int) -> dict[str, Any]:
    by_kind: dict[str, dict[str, int]] = {}
    rejected: dict[str, int] = {}
    dropped_by: dict[str, int] = {}
    for r in records:
        k = by_kind.setdefault(r["mask_source"], {"written": 0, "dropped": 0})
        k["written" if r["accepted"] else "dropped"] += 1
        for code in r.get("rejected", []):
            rejected[code] = rejected.get(code, 0) + 1
        if not r["accepted"]:
            code = r["problems"][0].split(":", 1)[0] if r.get("problems") else "unknown"
            dropped_by[code] = dropped_by.get(code, 0) + 1
    written = sum(1 for r in records if r["accepted"])
    return {
        "requested": requested,
        "written": written,
        "dropped": len(records) - written,
        "by_source": dict(sorted(by_kind.items())),
        "rejected_draws_by_reason": dict(sorted(rejected.items())),
        "dropped_by_reason": dict(sorted(dropped_by.items())),
    }


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def write_mask_datalist(
    source: str | MaskSource | Mapping[str, float] | BaseMaskSource,
    regime_datalist: str | os.PathLike,
    out_dir: str | os.PathLike,
    num_masks: int,
    seed: int = 0,
    num_classes: int | None = None,
    split: str = "training",
    regime_split: str = "training",
    dataset_dir: str | os.PathLike | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    max_tries: int = 10,
    label_mapping: Mapping[int, int] | None = None,
    label_threshold: float | None = None,
    slice_axis: int | None = None,
    min_foreground: float = 1,
    overwrite: bool = False,
) -> MaskDatalist:
    """Make ``num_masks`` conditioning masks from the regime's masks only and write them with a datalist.

    Mask ``i`` depends only on ``(seed, i)``, so a rerun, or a run asking for more masks, reproduces it. Dropped
    masks (every draw implausible) are counted in the manifest and left out of the datalist.

    Args:
        source: ``regime``, ``augmented``, ``generated``, ``interpolated``, a mixture
            (``"augmented:0.5,interpolated:0.5"`` or ``{"augmented": 0.5, "interpolated": 0.5}``) or a built
            :class:`~monai_siamese.masks.BaseMaskSource`.
        regime_datalist: datalist whose ``regime_split`` holds the regime's N real pairs.
        out_dir: output folder (see the module docstring).
        num_masks: masks to make (indices ``0 .. num_masks - 1``).
        seed: seed of the run.
        num_classes: classes including background (None: the datalist's ``num_classes`` or ``labels``).
        split: split of the written datalist.
        regime_split: split of the regime datalist to read.
        dataset_dir: base folder of the regime datalist's relative paths.
        options: per source name, constructor arguments (``{"augmented": {"rotate_degrees": 10}}``).
        max_tries: draws per mask before it is dropped (unless set in ``options``).
        label_mapping: ``{value: class}`` remap of the regime's labels.
        label_threshold: binarisation threshold of lossy masks.
        slice_axis: cut 3D regime volumes into 2D slices along this axis (None: masks as they are).
        min_foreground: foreground a slice needs when slicing.
        overwrite: replace a finished folder made with other arguments (else that is an error).

    Raises:
        ValueError: unknown source names, bad mixture weights, bad arguments.
        MaskSourceError: the source yields no usable mask for this regime (nothing is written).
        FileExistsError: ``out_dir`` holds masks made with other arguments and ``overwrite`` is False.
    """
    if int(num_masks) < 1:
        raise ValueError(f"num_masks must be >= 1, got {num_masks}")
    num_classes = _num_classes(regime_datalist, num_classes)
    src = build_mask_source(source, num_classes, options, max_tries)
    regime_name = str(regime_datalist)
    regime = load_regime_masks(
        regime_datalist,
        num_classes,
        split=regime_split,
        dataset_dir=dataset_dir,
        label_mapping=label_mapping,
        label_threshold=label_threshold,
        slice_axis=slice_axis,
        min_foreground=min_foreground,
    )
    if not regime:
        raise MaskSourceError(src.name, regime_name, f"split '{regime_split}' has no mask")
    src.fit(regime, regime_name)
    config = {
        "masks_version": MASKS_VERSION,
        **_source_spec(source, options),
        "num_masks": int(num_masks),
        "seed": int(seed),
        "num_classes": num_classes,
        "split": split,
        "regime_datalist": str(Path(regime_datalist).resolve()),
        "regime_split": regime_split,
        "regime_masks": [[m.label_path, m.slice_index] for m in regime],
        "max_tries": int(max_tries),
        "label_mapping": {str(k): int(v) for k, v in (label_mapping or {}).items()},
        "label_threshold": label_threshold,
        "slice_axis": slice_axis,
        "min_foreground": min_foreground,
    }
    config = json.loads(json.dumps(config, default=str))
    out = Path(out_dir)
    manifest_path = out / "manifest.json"
    if out.exists():
        manifest = _read_json(manifest_path)
        if manifest is not None and manifest.get("config") == config:
            return MaskDatalist(str(out / "datalist.json"), split, str(manifest_path), manifest["counts"], True)
        if not overwrite:
            raise FileExistsError(f"{out} exists and was not made by the same mask source run; pass overwrite=True")
    partial = out.parent / f".{out.name}.partial"
    if partial.exists() and _read_json(partial / "config.json") != config:
        shutil.rmtree(partial)
    for sub in ("labels", "images", "records"):
        (partial / sub).mkdir(parents=True, exist_ok=True)
    for stale in partial.rglob(".*"):  # temporary files of an interrupted atomic write
        if stale.is_file():
            stale.unlink()
    atomic_write_json(partial / "config.json", config)
    started = time.time()
    label_dtype = np.uint8 if num_classes <= 255 else np.int16
    records: list[dict] = []
    for i in range(int(num_masks)):
        rec_path = partial / "records" / f"{i:06d}.json"
        rec = _read_json(rec_path)
        if rec is None:
            sample = src.draw(i, seed)
            first = regime[sample.sources[0]]
            name = f"{i:05d}_{sample.kind}_{slice_name(first.label_path or 'mask', first.slice_index)}"
            has_image = sample.image is not None
            rec = _record(sample, regime, name, seed, has_image)
            if sample.accepted:
                save_nifti(sample.label.astype(label_dtype), sample.affine, partial / rec["label"])
                if has_image:
                    _write_image(sample.image, sample.affine, partial / rec["image"])
            atomic_write_json(rec_path, rec)
        records.append(rec)
    counts = _counts(records, int(num_masks))
    if counts["written"] == 0:
        shutil.rmtree(partial, ignore_errors=True)
        reasons = ", ".join(f"{k} x{v}" for k, v in counts["rejected_draws_by_reason"].items()) or "none"
        raise MaskSourceError(
            src.name,
            regime_name,
            f"all {num_masks} masks were dropped after {src.max_tries} implausible draws each "
            f"(rejected draws by reason: {reasons})",
        )
    if counts["dropped"]:
        logger.warning(f"mask source {src.name!r}: {counts['dropped']} of {num_masks} masks dropped ({regime_name})")
    entries = [{k: v for k, v in r.items() if k not in ("index", "accepted", "rejected")} for r in records]
    entries = [e for e, r in zip(entries, records) if r["accepted"]]
    write_datalist(
        partial / "datalist.json",
        {split: entries},
        extra={
            "name": f"conditioning masks ({src.name})",
            "num_classes": num_classes,
            "mask_source": src.name,
            "regime_datalist": config["regime_datalist"],
        },
    )
    manifest = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "versions": versions(),
        "seconds": round(time.time() - started, 2),
        "counts": counts,
        "config": config,
    }
    atomic_write_json(partial / "manifest.json", manifest)
    (partial / "config.json").unlink()
    if out.exists():
        shutil.rmtree(out)
    os.replace(partial, out)
    return MaskDatalist(str(out / "datalist.json"), split, str(manifest_path), counts, False)


def context_mask_source(
    source: str | Mapping[str, float],
    masks_per_real: int = 8,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    max_tries: int = 10,
) -> Callable[[Any], tuple[str, str]]:
    """A function for the evaluation's ``register_mask_source`` hook: given a mask context (``regime_datalist``,
    ``num_real``, ``seed``, ``work_dir``, ``num_classes``), it writes ``masks_per_real * num_real`` masks of
    ``source`` from the regime's masks into ``work_dir/masks_<source>`` and returns ``(datalist, split)``.

    Args:
        source: source name or mixture (validated now).
        masks_per_real: masks made per real mask of the regime.
        options: per source name, constructor arguments.
        max_tries: draws per mask before it is dropped.
    """
    weights = parse_mask_source(source)
    tag = "_".join(f"{k.value}{round(w * 100)}" if len(weights) > 1 else k.value for k, w in weights.items())

    def _write(ctx: Any) -> tuple[str, str]:
        config = getattr(ctx, "config", None)
        res = write_mask_datalist(
            source,
            ctx.regime_datalist,
            Path(ctx.work_dir) / f"masks_{tag}",
            num_masks=int(masks_per_real) * int(ctx.num_real),
            seed=int(ctx.seed),
            num_classes=int(ctx.num_classes),
            dataset_dir=getattr(config, "dataset_dir", None),
            options=options,
            max_tries=max_tries,
        )
        return res.datalist, res.split

    return _write


def conditioning_entries(
    source: str | MaskSource | Mapping[str, float],
    datalist: str | os.PathLike,
    split: str = "training",
    dataset_dir: str | os.PathLike | None = None,
    out_dir: str | os.PathLike | None = None,
    num_masks: int | None = None,
    masks_per_real: int = 8,
    seed: int = 0,
    num_classes: int | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    num_regime: int | None = None,
    **kwargs: Any,
) -> list[dict]:
    """The conditioning entries of a generator's sampling run (the bundles' ``mask_datalist``): for ``regime``, the
    ``split`` entries of ``datalist`` as they are; for any other source, the masks it makes from those entries only
    (``num_masks``, default ``masks_per_real`` per regime mask), written to ``out_dir`` by
    :func:`write_mask_datalist` and read back (entries with a canvas ``image`` and, where it differs from the new
    mask, a ``canvas_label``).

    Args:
        source: mask source name or mixture.
        datalist: the regime datalist.
        split: its split holding the regime's masks.
        dataset_dir: base folder of its relative paths.
        out_dir: folder of the written masks (required for sources other than ``regime``).
        num_masks: masks to make (None: ``masks_per_real`` times the regime's masks).
        masks_per_real: see ``num_masks``.
        seed: seed of the masks.
        num_classes: classes including background.
        options: per source, constructor arguments.
        num_regime: use only this many regime entries, drawn with ``seed`` (``select_entries``; e.g. MedDiff-FT's
            ``num_real_pairs``); the selection is written to ``out_dir/regime.json`` for the source to read.
        kwargs: further arguments of :func:`write_mask_datalist` (label mapping, slicing).
    """
    from monai_siamese.data.datalist import select_entries

    entries = load_datalist(datalist, split, dataset_dir, entry_key="label")
    if num_regime is not None and num_regime < len(entries):
        entries = select_entries(entries, num_regime, seed)
        if out_dir is not None:
            datalist, split, dataset_dir = (
                write_datalist(Path(out_dir).parent / f"{Path(out_dir).name}_regime.json", {split: entries}, False),
                split,
                None,
            )
    if set(parse_mask_source(source)) == {MaskSource.REGIME}:
        return entries
    if out_dir is None:
        raise ValueError(f"mask source {source!r} writes masks: give out_dir")
    n = int(num_masks) if num_masks is not None else int(masks_per_real) * len(entries)
    res = write_mask_datalist(
        source,
        datalist,
        out_dir,
        num_masks=n,
        seed=seed,
        num_classes=num_classes,
        regime_split=split,
        dataset_dir=dataset_dir,
        options=options,
        **kwargs,
    )
    return load_datalist(res.datalist, res.split, entry_key="label")
