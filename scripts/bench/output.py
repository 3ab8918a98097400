"""JSON and Markdown output of the benchmarks: number formatting, median (min-max) cells, tables, atomic writes."""

from __future__ import annotations

import datetime
import math
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["fmt", "fmt_spread", "table", "command_line", "stamp", "write_result", "run_json_worker"]


def fmt(value: float | None, digits: int = 2) -> str:
    """A number with ``digits`` decimals, ``-`` for None or NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def fmt_spread(stats: Mapping[str, float] | None, digits: int = 2) -> str:
    """``median (min-max)`` of a :func:`~bench.timing.spread` dict."""
    if not stats:
        return "-"
    return f"{fmt(stats['median'], digits)} ({fmt(stats['min'], digits)}-{fmt(stats['max'], digits)})"


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """Markdown table lines."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def command_line(script: str, argv: Sequence[str] | None) -> str:
    """The command that produced a result (for the report)."""
    args = list(sys.argv[1:] if argv is None else argv)
    return f"python {script} " + " ".join(args)


def stamp() -> str:
    """UTC time stamp for result file names."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def write_result(out_dir: str | Path, stem: str, result: Mapping[str, Any], markdown: str) -> str:
    """Write ``<stem>.json`` and ``<stem>.md`` atomically into ``out_dir``; returns the common path stem."""
    from monai_siamese.utils import atomic_write_json, atomic_write_text

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    base = out / stem
    atomic_write_json(f"{base}.json", dict(result))
    atomic_write_text(f"{base}.md", markdown)
    return str(base)


def run_json_worker(cmd: Sequence[str], cwd: str | None = None) -> dict:
    """Run a worker process that prints its result as JSON on its last stdout line."""
    import json

    r = subprocess.run(list(cmd), capture_output=True, text=True, check=False, cwd=cwd)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:6])} ... failed:\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])
