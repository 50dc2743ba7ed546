"""Latency and rate summaries: pure functions over samples, tested without I/O."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["LatencySummary", "cpu_ms_per", "median", "percentile", "ratio", "summarize"]


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted values (``fraction`` in 0..1); NaN when empty.

    Nearest rank, not interpolation: a reported p99 is a latency some message really had.
    """
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass(frozen=True, slots=True)
class LatencySummary:
    count: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(latencies_ms: Sequence[float]) -> LatencySummary:
    ordered = sorted(latencies_ms)
    return LatencySummary(
        count=len(ordered),
        p50_ms=percentile(ordered, 0.50),
        p90_ms=percentile(ordered, 0.90),
        p99_ms=percentile(ordered, 0.99),
        max_ms=ordered[-1] if ordered else math.nan,
    )


def median(values: Sequence[float]) -> float:
    return percentile(sorted(values), 0.5)


def ratio(ours: float, theirs: float) -> float:
    """``ours / theirs``; NaN when either side is missing or zero (a ratio to nothing means nothing)."""
    if not theirs or math.isnan(theirs) or math.isnan(ours):
        return math.nan
    return ours / theirs


def cpu_ms_per(cpu_secs: Mapping[str, float], count: int,
               counted: Callable[[str], bool] = lambda name: True) -> float:
    """CPU milliseconds of the processes ``counted`` names (all by default) per message; NaN when no
    message or no such process was measured (a cost of nothing, or of nobody, means nothing)."""
    secs = [v for name, v in cpu_secs.items() if counted(name)]
    return sum(secs) * 1000 / count if count and secs else math.nan
