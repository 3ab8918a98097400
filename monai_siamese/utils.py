"""Small shared helpers: atomic file writes, versions, devices, bundle locations."""

from __future__ import annotations

import ast
import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "atomic_path",
    "atomic_write_text",
    "atomic_write_json",
    "versions",
    "default_device",
    "find_bundle_root",
    "repo_root",
]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[str]:
    """Yield a temporary path next to ``path``; on success it is renamed onto ``path`` (atomic on POSIX).

    The temporary file keeps the final suffix (``.nii.gz``, ``.png``...) so writers that dispatch on the
    extension behave as for the final name. On error the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix is None:
        suffix = "".join(path.suffixes) or ".tmp"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name.split('.')[0]}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    return str(obj)


def versions() -> dict[str, str]:
    """Versions of the packages that determine results, for manifests and metadata."""
    import monai
    import numpy

    out = {"python": sys.version.split()[0], "torch": torch.__version__, "monai": monai.__version__}
    out["numpy"] = numpy.__version__
    from monai_siamese import __version__

    out["monai_siamese"] = __version__
    return out


def default_device() -> torch.device:
    """``cuda`` when available, else ``cpu``."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def repo_root() -> Path:
    """Folder that holds the ``monai_siamese`` package (the repository root for an editable install)."""
    return Path(__file__).resolve().parent.parent


def _config_files_from_argv(argv: list[str]) -> list[str]:
    for i, arg in enumerate(argv):
        value = None
        if arg == "--config_file" and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith("--config_file="):
            value = arg.split("=", 1)[1]
        if value is None:
            continue
        value = value.strip()
        if value.startswith("["):
            try:
                return [str(v) for v in ast.literal_eval(value)]
            except (ValueError, SyntaxError):
                return []
        return [v for v in value.split(",") if v]
    return []


def find_bundle_root(name: str) -> str:
    """Locate the folder of bundle ``name`` so a bundle runs from any working directory.

    Order: the folder of the ``--config_file`` given on the command line (``.../<name>/configs/x.json``), the
    bundle shipped beside this package (editable install / source checkout), then ``./bundles/<name>`` and ``.``.
    Users can always override ``--bundle_root``.
    """
    for cfg in _config_files_from_argv(sys.argv):
        p = Path(cfg).resolve()
        if p.parent.name == "configs" and p.parent.parent.name == name:
            return str(p.parent.parent)
    candidate = repo_root() / "bundles" / name
    if (candidate / "configs").is_dir():
        return str(candidate)
    candidate = Path.cwd() / "bundles" / name
    if (candidate / "configs").is_dir():
        return str(candidate)
    return str(Path.cwd())
