"""Shared pieces of the benchmark scripts (``scripts/benchmark*.py``): clocks, interleaved repeats with medians and
spreads, peak memory, FLOPs, the environment, bundle-built trainers and plain loops, JSON/Markdown output.

Every ratio a benchmark reports comes from :func:`~bench.timing.interleave`: the variants run in alternating blocks
(A B A B ...), each block gives one ratio, and the report is the median of >= 3 such ratios with their min-max, so a
job that starts on a shared machine mid-run hits both variants alike instead of flipping the result.
"""

from __future__ import annotations
