"""MONAI datalist JSON: loading with path resolution, and writing with relative paths."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from monai_siamese.errors import InputError
from monai_siamese.utils import atomic_write_json

__all__ = [
    "PATH_KEYS",
    "DatalistError",
    "datalist_splits",
    "read_datalist_file",
    "load_datalist",
    "write_datalist",
    "select_entries",
]

#: entry keys that hold file paths and are resolved against the dataset folder
PATH_KEYS = ("image", "label")


class DatalistError(InputError, ValueError):
    """The datalist file itself is missing or malformed."""


def read_datalist_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a datalist JSON file, with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise DatalistError(f"{path}: datalist file not found")
    try:
        with open(path, encoding="utf-8") as f:
            content = json.load(f)
    except json.JSONDecodeError as e:
        raise DatalistError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(content, dict):
        raise DatalistError(f"{path}: expected a JSON object with split lists, got {type(content).__name__}")
    return content


def datalist_splits(content: Mapping[str, Any]) -> list[str]:
    """Names of the splits of a datalist: top-level lists of entries (dicts with an ``image`` or ``label``)."""
    return [
        k
        for k, v in content.items()
        if isinstance(v, list) and v and all(isinstance(e, Mapping) and ("image" in e or "label" in e) for e in v)
    ]


def _resolve(value: str, bases: Sequence[Path]) -> str:
    p = Path(os.path.expanduser(value))
    if p.is_absolute():
        return str(p)
    for base in bases:
        cand = base / p
        if cand.exists():
            return str(cand.resolve())
    return str((bases[0] / p).resolve())


def load_datalist(
    datalist: str | os.PathLike,
    key: str = "training",
    dataset_dir: str | os.PathLike | None = None,
    path_keys: Sequence[str] = PATH_KEYS,
    required: bool = True,
    entry_key: str = "image",
) -> list[dict]:
    """Load one split of a MONAI datalist, with absolute paths.

    Relative paths are resolved against ``dataset_dir`` when given and the file exists there, else against the
    datalist's folder. Reading a datalist only reads the file (the demo data are built by whoever asks for them:
    :func:`~monai_siamese.data.ensure_demo_data`).

    Args:
        datalist: path of the datalist JSON.
        key: split to load (``training``, ``validation``, ``test``...).
        dataset_dir: optional base folder for relative paths.
        path_keys: entry keys holding paths.
        required: raise when the split is missing (else return ``[]``).
        entry_key: the key every entry must have (``label`` for lists of masks or label volumes to generate from:
            ``{"masks": [{"label": "labels/case1.nii.gz"}]}``); a bare string entry is taken as that key.
    """
    content = read_datalist_file(datalist)
    if key not in content:
        if not required:
            return []
        raise DatalistError(f"{datalist}: has no '{key}' split (splits found: {sorted(content)})")
    entries = content[key]
    if not isinstance(entries, list):
        raise DatalistError(f"{datalist}: split '{key}' must be a list of entries")
    bases = [Path(dataset_dir)] if dataset_dir else []
    bases.append(Path(datalist).resolve().parent)
    out = []
    for i, entry in enumerate(entries):
        if isinstance(entry, str):
            entry = {entry_key: entry}
        if not isinstance(entry, Mapping) or entry_key not in entry:
            raise DatalistError(f"{datalist}: entry {i} of '{key}' has no '{entry_key}' ({entry!r})")
        e = dict(entry)
        for k in path_keys:
            if isinstance(e.get(k), str):
                e[k] = _resolve(e[k], bases)
        out.append(e)
    return out


def select_entries(entries: Sequence[dict], num: int | None = None, seed: int = 0) -> list[dict]:
    """Pick ``num`` entries with a fixed seed (all when ``num`` is None or larger than the list)."""
    entries = list(entries)
    if num is None or num >= len(entries):
        return entries
    import numpy as np

    idx = np.random.default_rng(seed).choice(len(entries), size=num, replace=False)
    return [entries[i] for i in sorted(idx)]


def write_datalist(
    path: str | os.PathLike,
    splits: Mapping[str, Sequence[Mapping]],
    relative: bool = True,
    path_keys: Sequence[str] = PATH_KEYS,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """Write a datalist JSON atomically; paths under its folder are stored relative to it.

    Args:
        path: output path.
        splits: ``{"training": [...], "validation": [...], ...}``.
        relative: store paths relative to the datalist folder where possible.
        path_keys: entry keys holding paths.
        extra: extra top-level fields (``name``, ``description``, ``labels``...).
    """
    path = Path(path)
    base = path.resolve().parent
    content: dict[str, Any] = dict(extra or {})
    for split, entries in splits.items():
        out = []
        for entry in entries:
            e = dict(entry)
            for k in path_keys:
                v = e.get(k)
                if relative and isinstance(v, str) and os.path.isabs(v):
                    try:
                        e[k] = os.path.relpath(v, base)
                    except ValueError:  # other drive on Windows
                        pass
            out.append(e)
        content[split] = out
    atomic_write_json(path, content)
    return str(path)
