"""Check every datalist entry before training: one line per problem, each naming its file, all at once."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from monai.transforms import LoadImage

from monai_siamese.data.labels import LabelValueError, map_label_values
from monai_siamese.errors import InputError

__all__ = [
    "Problem",
    "DataValidationError",
    "validate_entry",
    "validate_datalist",
    "validate_datalist_file",
    "validate_or_raise",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Problem:
    """One problem with one file."""

    file: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.message}"


class DataValidationError(InputError, ValueError):
    """Raised by :func:`validate_or_raise`; ``problems`` lists every problem found."""

    def __init__(self, problems: Sequence[Problem], total: int) -> None:
        self.problems = list(problems)
        lines = "\n".join(str(p) for p in self.problems)
        super().__init__(f"{len(self.problems)} problem(s) in {total} datalist entries:\n{lines}")


def _load(path: str, loader: LoadImage) -> tuple[torch.Tensor | None, str | None]:
    if not os.path.exists(path):
        return None, "file not found"
    try:
        return loader(path), None
    except Exception as e:  # any reader failure is reported, never raised here
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return None, f"unreadable ({type(e).__name__}: {msg[:200]})"


def _spatial(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(int(s) for s in t.shape[1:])


def validate_entry(
    entry: Mapping,
    num_classes: int,
    label_mapping: Mapping[int, int] | None = None,
    label_threshold: float | None = None,
    require_label: bool = True,
    allow_empty_label: bool = False,
    check_geometry: bool = True,
    require_image: bool = True,
    image_key: str = "image",
    label_key: str = "label",
) -> list[Problem]:
    """All problems of one entry (empty list when it is fine)."""
    loader = LoadImage(image_only=True, ensure_channel_first=True)
    problems: list[Problem] = []
    img, err = None, None
    img_path = str(entry.get(image_key, ""))
    if image_key in entry:
        img, err = _load(img_path, loader)
    elif require_image:
        err = f"entry has no '{image_key}'"
        img_path = str(entry.get(label_key, "<entry>"))
    if err:
        problems.append(Problem(img_path, err))
    elif img is not None and not bool(torch.isfinite(img.float()).all()):
        n_bad = int((~torch.isfinite(img.float())).sum())
        problems.append(Problem(img_path, f"image contains {n_bad} NaN/Inf values"))
    lab_path = entry.get(label_key)
    if lab_path is None:
        if require_label:
            problems.append(Problem(img_path, f"entry has no '{label_key}'"))
        return problems
    lab_path = str(lab_path)
    lab, err = _load(lab_path, loader)
    if err:
        problems.append(Problem(lab_path, err))
        return problems
    lab_arr = lab
    if lab_arr.ndim >= 3 and lab_arr.shape[0] > 1:
        if not bool(torch.all(lab_arr == lab_arr[:1])):
            problems.append(Problem(lab_path, f"label has {lab_arr.shape[0]} channels that differ (expected one)"))
            return problems
        lab_arr = lab_arr[:1]
    try:
        mapped = map_label_values(lab_arr, num_classes, label_mapping, label_threshold, name=lab_path)
        if not allow_empty_label and not np.any(mapped > 0):
            problems.append(Problem(lab_path, "label is empty (background only)"))
    except LabelValueError as e:
        problems.append(Problem(lab_path, str(e).split(": ", 1)[1] if ": " in str(e) else str(e)))
    if img is not None:
        if _spatial(img) != _spatial(lab):
            problems.append(
                Problem(lab_path, f"label shape {_spatial(lab)} differs from image shape {_spatial(img)} ({img_path})")
            )
        elif check_geometry and hasattr(img, "affine") and hasattr(lab, "affine"):
            a, b = np.asarray(img.affine, dtype=float), np.asarray(lab.affine, dtype=float)
            if not np.allclose(a, b, rtol=1e-3, atol=1e-2):
                problems.append(
                    Problem(
                        lab_path,
                        f"label geometry differs from image ({img_path}): spacing "
                        f"{np.round(np.linalg.norm(b[:3, :3], axis=0), 4).tolist()} vs "
                        f"{np.round(np.linalg.norm(a[:3, :3], axis=0), 4).tolist()}, origin "
                        f"{np.round(b[:3, 3], 3).tolist()} vs {np.round(a[:3, 3], 3).tolist()}",
                    )
                )
    return problems


def validate_datalist(
    entries: Sequence[Mapping],
    num_classes: int,
    label_mapping: Mapping[int, int] | None = None,
    label_threshold: float | None = None,
    require_label: bool = True,
    allow_empty_label: bool = False,
    check_geometry: bool = True,
    require_image: bool = True,
    num_workers: int = 4,
) -> list[Problem]:
    """Check all ``entries`` (reading every file once, in threads) and return every problem found.

    Checks: missing or unreadable file, NaN/Inf in the image, image/label shape or geometry mismatch, label
    values that cannot be mapped to ``0..num_classes-1``, labels with no foreground.

    Args:
        entries: datalist entries with absolute paths (see :func:`~monai_siamese.data.load_datalist`).
        num_classes: classes including background.
        label_mapping: explicit label remap.
        label_threshold: binarisation threshold for lossy masks.
        require_label: an entry without a label is a problem.
        allow_empty_label: accept labels that are all background.
        check_geometry: compare image and label affines.
        require_image: an entry without an image is a problem (False for mask-only inputs).
        num_workers: reader threads.
    """

    def one(entry: Mapping) -> list[Problem]:
        return validate_entry(
            entry,
            num_classes,
            label_mapping,
            label_threshold,
            require_label,
            allow_empty_label,
            check_geometry,
            require_image,
        )

    if num_workers > 1 and len(entries) > 1:
        with ThreadPoolExecutor(num_workers) as pool:
            results = list(pool.map(one, entries))
    else:
        results = [one(e) for e in entries]
    return [p for r in results for p in r]


def validate_or_raise(entries: Sequence[Mapping], num_classes: int, **kwargs) -> int:
    """Run :func:`validate_datalist`; raise :class:`DataValidationError` listing every problem, else return the
    number of entries checked. Training entry points call this before anything else."""
    entries = list(entries)
    problems = validate_datalist(entries, num_classes, **kwargs)
    if problems:
        raise DataValidationError(problems, len(entries))
    logger.info(f"validated {len(entries)} datalist entries: no problem found")
    return len(entries)


def validate_datalist_file(
    datalist: str | os.PathLike,
    num_classes: int | None = None,
    splits: Sequence[str] | None = None,
    dataset_dir: str | os.PathLike | None = None,
    **kwargs,
) -> tuple[list[Problem], int, list[str]]:
    """Check every entry of the ``splits`` of a datalist file (``python -m monai_siamese validate``).

    Args:
        datalist: the datalist JSON.
        num_classes: classes including background (default: the datalist's ``num_classes`` or ``labels``).
        splits: splits to check (default: every split).
        dataset_dir: base folder of relative paths.
        kwargs: options of :func:`validate_datalist`.

    Returns:
        the problems, the number of entries checked and the splits checked.

    Raises:
        DatalistError: the file is missing or malformed, or ``num_classes`` is neither given nor in the file.
    """
    from monai_siamese.data.datalist import DatalistError, datalist_splits, load_datalist, read_datalist_file

    content = read_datalist_file(datalist)
    if num_classes is None:
        if "num_classes" in content:
            num_classes = int(content["num_classes"])
        elif isinstance(content.get("labels"), Mapping):
            num_classes = len(content["labels"])
        else:
            raise DatalistError(f"{datalist}: has no 'num_classes' or 'labels': give the number of classes")
    splits = list(splits) if splits else datalist_splits(content)
    entries = [e for split in splits for e in load_datalist(datalist, split, dataset_dir)]
    return validate_datalist(entries, num_classes, **kwargs), len(entries), splits
