"""Errors about the user's input (data, weights, settings), and the one-line report of them on the command line.

Every error that names a bad file or setting derives from :class:`InputError`. Raised inside a bundle config
expression, MONAI wraps it in "Failed to evaluate ConfigExpression" with a long traceback; :func:`install_excepthook`
(installed when ``python -m monai.bundle`` imports this package, and by ``python -m monai_siamese``) prints such an error
as one line, ``error: <message>``, and exits with status 1. Programs that catch exceptions (servers, notebooks,
tests) are not affected: only an uncaught error at the top level of those two commands is reported this way.
"""

from __future__ import annotations

import sys
from types import TracebackType

__all__ = ["InputError", "WeightsError", "find_input_error", "install_excepthook"]


class InputError(Exception):
    """A problem with the user's input (a file, a datalist, a setting), described in one line naming it."""


class WeightsError(InputError, RuntimeError):
    """A weights file that cannot be used: unreadable, or trained with settings that disagree with the config."""


def find_input_error(error: BaseException | None) -> InputError | None:
    """The first :class:`InputError` in ``error``'s chain of causes and contexts, or None."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, InputError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def _hook(previous):
    def hook(kind: type[BaseException], error: BaseException, tb: TracebackType | None) -> None:
        found = find_input_error(error)
        if found is None:
            previous(kind, error, tb)
            return
        print(f"error: {str(found).strip()}", file=sys.stderr)
        sys.stderr.flush()
        raise SystemExit(1)

    hook._monai_siamese = True  # type: ignore[attr-defined]
    return hook


def install_excepthook(force: bool = False) -> bool:
    """Report uncaught :class:`InputError` as one line on ``python -m monai.bundle`` / ``python -m monai_siamese``
    (or always with ``force``); returns whether the hook is installed."""
    argv0 = sys.argv[0].replace("\\", "/") if sys.argv else ""
    command = argv0.endswith("monai/bundle/__main__.py")  # python -m monai_siamese installs it in cli.main
    if not (force or command) or getattr(sys.excepthook, "_monai_siamese", False):
        return getattr(sys.excepthook, "_monai_siamese", False)
    sys.excepthook = _hook(sys.excepthook)
    return True
