"""Importers: turn the reference projects' folder layouts into a MONAI datalist.

Layouts:

- ``pranet``: PraNet / Kvasir style ``<root>/images`` + ``<root>/masks`` with matching file names (mask names may
  carry a ``_mask`` / ``_segmentation`` / ``_seg`` / ``_label`` suffix, as ISIC's do).
- ``siamese``: Siamese-Diffusion ``prompt.json``: JSON lines ``{"source": mask, "target": image, "prompt": text}``.
- ``segguided``: SegGuidedDiff ``DATA_FOLDER/{train,val,test}/*`` + ``MASK_FOLDER/all/{train,val,test}/*``.
- ``meddiff``: MedDiff-FT ``train/data.json``: a column dictionary ``{"image": [...], "mask_1": [...],
  "prompt": [...]}`` (lists, or pandas-style ``{"0": ..., "1": ...}`` columns).

The user's folders are only read; the datalist is written where ``out`` says (paths relative to it).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from monai_siamese.data.datalist import write_datalist
from monai_siamese.errors import InputError

__all__ = [
    "Layout",
    "ImportError_",
    "IMAGE_EXTENSIONS",
    "import_image_mask_folders",
    "import_siamese_prompt_json",
    "import_segguided",
    "import_meddiff",
    "import_layout",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".nii", ".nii.gz", ".dcm")
_MASK_SUFFIXES = ("_segmentation", "_mask", "_masks", "_seg", "_label", "_gt", "_anno")


class Layout(str, Enum):
    PRANET = "pranet"
    SIAMESE = "siamese"
    SEGGUIDED = "segguided"
    MEDDIFF = "meddiff"


class ImportError_(InputError, ValueError):
    """A reference-layout folder cannot be imported; the message names the file or folder."""


def _stem(path: Path) -> str:
    name = path.name
    for ext in sorted(IMAGE_EXTENSIONS, key=len, reverse=True):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return path.stem


def _list_images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise ImportError_(f"{folder}: folder not found")
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(IMAGE_EXTENSIONS))


def _mask_key(stem: str) -> str:
    low = stem.lower()
    for suf in _MASK_SUFFIXES:
        if low.endswith(suf):
            return stem[: -len(suf)]
    return stem


def _pair_folders(img_dir: Path, mask_dir: Path) -> tuple[list[dict], list[str]]:
    images = {_stem(p): p for p in _list_images(img_dir)}
    masks: dict[str, Path] = {}
    for p in _list_images(mask_dir):
        s = _stem(p)
        masks[s if s in images else _mask_key(s)] = p
    pairs, problems = [], []
    for stem, img in images.items():
        if stem in masks:
            pairs.append({"image": str(img.resolve()), "label": str(masks[stem].resolve())})
        else:
            problems.append(f"{img}: no mask with a matching name in {mask_dir}")
    for stem, m in masks.items():
        if stem not in images:
            problems.append(f"{m}: no image with a matching name in {img_dir}")
    return pairs, problems


def _split(entries: list[dict], val_fraction: float, test_fraction: float, seed: int) -> dict[str, list[dict]]:
    n = len(entries)
    order = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * val_fraction)) if n > 1 else 0
    n_test = int(round(n * test_fraction)) if n > 2 else 0
    test = sorted(order[:n_test].tolist())
    val = sorted(order[n_test : n_test + n_val].tolist())
    train = sorted(order[n_test + n_val :].tolist())
    out = {"training": [entries[i] for i in train], "validation": [entries[i] for i in val]}
    if n_test:
        out["test"] = [entries[i] for i in test]
    return out


def _raise_if(problems: list[str], what: str) -> None:
    if problems:
        lines = "\n".join(problems)
        raise ImportError_(f"{len(problems)} problem(s) importing {what}:\n{lines}")


def import_image_mask_folders(
    root: str | os.PathLike,
    images: str = "images",
    masks: str = "masks",
    val_fraction: float = 0.1,
    test_fraction: float = 0.0,
    seed: int = 0,
) -> dict[str, list[dict]]:
    """PraNet / Kvasir layout: ``root/images`` + ``root/masks`` with matching names; a seeded random split."""
    root = Path(root)
    pairs, problems = _pair_folders(root / images, root / masks)
    _raise_if(problems, str(root))
    if not pairs:
        raise ImportError_(f"{root}: no image/mask pairs found in {images}/ and {masks}/")
    return _split(pairs, val_fraction, test_fraction, seed)


def _resolve_ref(value: str, bases: Sequence[Path]) -> Path | None:
    p = Path(value)
    if p.is_absolute():
        return p if p.exists() else None
    for base in bases:
        cand = (base / p).resolve()
        if cand.exists():
            return cand
    return None


def _bases(path: Path, root: str | os.PathLike | None) -> list[Path]:
    out = [Path(root)] if root else []
    out += [path.parent, *list(path.parent.parents)[:3], Path.cwd()]
    return out


def import_siamese_prompt_json(
    path: str | os.PathLike,
    root: str | os.PathLike | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
) -> dict[str, list[dict]]:
    """Siamese-Diffusion ``prompt.json`` (JSON lines, or one JSON list): ``source`` is the mask, ``target`` the
    image; ``prompt`` is kept. Relative paths are looked up from ``root``, the file's folder and its parents."""
    path = Path(path)
    if not path.is_file():
        raise ImportError_(f"{path}: prompt file not found")
    text = path.read_text(encoding="utf-8").strip()
    try:
        rows = (
            json.loads(text)
            if text.startswith("[")
            else [json.loads(line) for line in text.splitlines() if line.strip()]
        )
    except json.JSONDecodeError as e:
        raise ImportError_(f"{path}: not JSON lines ({e})") from e
    bases = _bases(path, root)
    entries, problems = [], []
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping) or "source" not in row or "target" not in row:
            problems.append(f"{path}: line {i + 1} lacks 'source'/'target'")
            continue
        img, mask = _resolve_ref(str(row["target"]), bases), _resolve_ref(str(row["source"]), bases)
        if img is None:
            problems.append(f"{path}: line {i + 1}: image (target) {row['target']} not found")
        if mask is None:
            problems.append(f"{path}: line {i + 1}: mask (source) {row['source']} not found")
        if img is not None and mask is not None:
            entry: dict[str, Any] = {"image": str(img), "label": str(mask)}
            if "prompt" in row:
                entry["prompt"] = row["prompt"]
            entries.append(entry)
    _raise_if(problems, str(path))
    return _split(entries, val_fraction, 0.0, seed)


def import_segguided(
    data_dir: str | os.PathLike, mask_dir: str | os.PathLike, splits: Sequence[str] = ("train", "val", "test")
) -> dict[str, list[dict]]:
    """SegGuidedDiff layout: images in ``data_dir/<split>``, masks in ``mask_dir/all/<split>`` with the same file
    names; splits map to ``training`` / ``validation`` / ``test``."""
    names = {"train": "training", "val": "validation", "test": "test"}
    data_dir, mask_dir = Path(data_dir), Path(mask_dir)
    out: dict[str, list[dict]] = {}
    problems: list[str] = []
    for split in splits:
        img_split, mask_split = data_dir / split, mask_dir / "all" / split
        if not img_split.is_dir():
            continue
        if not mask_split.is_dir():
            problems.append(f"{mask_split}: mask folder for split '{split}' not found")
            continue
        pairs, probs = _pair_folders(img_split, mask_split)
        problems += probs
        out[names.get(split, split)] = pairs
    _raise_if(problems, f"{data_dir} + {mask_dir}")
    if not out.get("training"):
        raise ImportError_(f"{data_dir}: no 'train' split with images found")
    return out


def _column(content: Mapping, key: str, path: Path) -> list:
    col = content.get(key)
    if col is None:
        raise ImportError_(f"{path}: no '{key}' column (columns: {sorted(content)})")
    if isinstance(col, Mapping):  # pandas to_json default: {"0": v0, "1": v1}
        return [col[k] for k in sorted(col, key=lambda k: int(k) if str(k).isdigit() else str(k))]
    return list(col)


def import_meddiff(
    path: str | os.PathLike,
    root: str | os.PathLike | None = None,
    mask_column: str = "mask_1",
    val_fraction: float = 0.0,
    seed: int = 0,
) -> dict[str, list[dict]]:
    """MedDiff-FT ``train/data.json`` column dictionary (``image``, ``mask_1``, ``prompt``)."""
    path = Path(path)
    if not path.is_file():
        raise ImportError_(f"{path}: data.json not found")
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ImportError_(f"{path}: not valid JSON ({e})") from e
    images, masks = _column(content, "image", path), _column(content, mask_column, path)
    prompts = _column(content, "prompt", path) if "prompt" in content else [None] * len(images)
    if len(images) != len(masks):
        raise ImportError_(f"{path}: {len(images)} images but {len(masks)} masks")
    bases = _bases(path, root)
    entries, problems = [], []
    for i, (im, mk, pr) in enumerate(zip(images, masks, prompts)):
        img, mask = _resolve_ref(str(im), bases), _resolve_ref(str(mk), bases)
        if img is None:
            problems.append(f"{path}: row {i}: image {im} not found")
        if mask is None:
            problems.append(f"{path}: row {i}: mask {mk} not found")
        if img is not None and mask is not None:
            entry: dict[str, Any] = {"image": str(img), "label": str(mask)}
            if pr is not None:
                entry["prompt"] = pr
            entries.append(entry)
    _raise_if(problems, str(path))
    return _split(entries, val_fraction, 0.0, seed)


def import_layout(
    layout: Layout | str,
    source: str | os.PathLike,
    out: str | os.PathLike | None = None,
    masks: str | os.PathLike | None = None,
    **kwargs: Any,
) -> dict[str, list[dict]]:
    """Import ``source`` in ``layout`` and, if ``out`` is given, write the datalist there.

    Args:
        layout: one of :class:`Layout`.
        source: root folder (pranet), prompt.json (siamese), data folder (segguided) or data.json (meddiff).
        out: datalist path to write.
        masks: the mask folder for ``segguided``.
        kwargs: passed to the layout's importer (``val_fraction``, ``seed``, ``root``...).
    """
    layout = Layout(layout)
    if layout == Layout.PRANET:
        splits = import_image_mask_folders(source, **kwargs)
    elif layout == Layout.SIAMESE:
        splits = import_siamese_prompt_json(source, **kwargs)
    elif layout == Layout.SEGGUIDED:
        if masks is None:
            raise ImportError_("the segguided layout needs the mask folder (MASK_FOLDER holding all/<split>)")
        splits = import_segguided(source, masks, **kwargs)
    else:
        splits = import_meddiff(source, **kwargs)
    if out is not None:
        write_datalist(out, splits, extra={"imported_from": {"layout": layout.value, "source": str(source)}})
    return splits
