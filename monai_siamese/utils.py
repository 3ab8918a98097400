"""Small shared helpers: atomic file writes, versions, devices, bundle locations.

Imports no torch at module level: the atomic writer is used by light processes too."""

from __future__ import annotations

import ast
import contextlib
import errno
import json
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = [
    "atomic_path",
    "ATOMIC_PREFIX",
    "atomic_temp_owner",
    "remove_stale_temporaries",
    "current_umask",
    "atomic_write_text",
    "atomic_write_json",
    "versions",
    "default_device",
    "find_bundle_root",
    "repo_root",
]


#: fixed start of every temporary file made by :func:`atomic_path`: ``.atomic-<pid>-<stem>.<random><suffix>``
ATOMIC_PREFIX = ".atomic-"
_ATOMIC_NAME = re.compile(re.escape(ATOMIC_PREFIX) + r"(\d+)-")
_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it where Linux exposes it (``/proc/self/status``, kernel >= 4.7);
    elsewhere through ``os.umask`` under a lock (``os.umask`` sets the process-wide mask while reading it)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o077)
        os.umask(mask)
    return mask


def atomic_temp_owner(name: str) -> int | None:
    """The process id that owns the :func:`atomic_path` temporary file ``name``; None for any other name."""
    m = _ATOMIC_NAME.match(name)
    return int(m.group(1)) if m else None


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return True  # not a process id we made: treat as alive, never remove
    try:
        os.kill(pid, 0)
    except OSError as e:
        return e.errno != errno.ESRCH  # EPERM: alive, another user's
    return True


def remove_stale_temporaries(folders: Iterable[str | os.PathLike]) -> list[str]:
    """Remove the temporary files :func:`atomic_path` left in ``folders`` (not recursive) when a writer was killed.

    Only files named by :func:`atomic_path` (``.atomic-<pid>-...``) whose owning process no longer runs are removed:
    never another live process's temporary, never this process's, never any other file. Returns the removed paths.
    """
    removed = []
    me = os.getpid()
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            continue
        for entry in os.scandir(folder):
            pid = atomic_temp_owner(entry.name)
            if pid is None or pid == me or not entry.is_file(follow_symlinks=False) or _pid_alive(pid):
                continue
            with contextlib.suppress(FileNotFoundError):  # another rerun removed it first
                os.remove(entry.path)
                removed.append(entry.path)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[str]:
    """Yield a temporary path next to ``path``; on success it is renamed onto ``path`` (atomic on POSIX).

    The temporary file keeps the final suffix (``.nii.gz``, ``.png``...) so writers that dispatch on the
    extension behave as for the final name. On error the temporary file is removed and ``path`` is untouched.
    Before the rename the file gets the mode ``open()`` would give a new file (``0o666 & ~umask``; ``mkstemp``
    makes it 0600). The temporary name, ``.atomic-<pid>-<stem>.<random><suffix>``, tells which process owns it, so
    a rerun can remove what a killed run left (:func:`remove_stale_temporaries`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix is None:
        suffix = "".join(path.suffixes) or ".tmp"
    prefix = f"{ATOMIC_PREFIX}{os.getpid()}-{path.name.split('.')[0]}."
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~current_umask())
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
    if hasattr(obj, "tolist"):  # tensors and numpy values
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    return str(obj)


def versions() -> dict[str, str]:
    """Versions of the packages that determine results, for manifests and metadata."""
    import monai
    import numpy
    import torch

    out = {"python": sys.version.split()[0], "torch": torch.__version__, "monai": monai.__version__}
    out["numpy"] = numpy.__version__
    from monai_siamese import __version__

    out["monai_siamese"] = __version__
    return out


def default_device() -> torch.device:
    """``cuda`` when available, else ``cpu``."""
    import torch

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
