"""Markdown pieces of the report: numbers as text and pipe tables (shared by the report's sections)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["fmt", "met", "pct", "table", "times", "yes"]


def fmt(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    return [*lines, ""]


def times(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:,.2f}x"


def yes(ok: bool) -> str:
    return "yes" if ok else "**no**"


def met(ok: bool | None) -> str:
    """``yes``, ``**no**``, or ``n/a`` when the figure was not measured (a missing figure meets nothing,
    and is not a miss either)."""
    return "n/a" if ok is None else yes(ok)


def pct(share: float) -> str:
    return "" if math.isnan(share) else f"{share:.1%}"
