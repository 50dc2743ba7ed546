"""Figures measured by the reliability tests (fault suite, fuzzing), written out at the end of the run.

Every run writes ``test-artifacts/reliability.md``; with ``IM_WRITE_RELIABILITY_DOC=1`` (``make
reliability``) the same report replaces ``docs/reliability.md``, so the document in the tree is always
the output of a real run, never typed by hand.
"""

from __future__ import annotations

import datetime
import os
import platform
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
_SECTIONS: dict[str, list[tuple[str, dict[str, Any]]]] = {}
_TITLES = {
    "faults": "Fault suite: nothing acknowledged is lost",
    "fuzz": "Bad input: property-based fuzzing",
}


def record(section: str, name: str, figures: dict[str, Any]) -> None:
    """Add one measured row; called by the tests that measured it."""
    _SECTIONS.setdefault(section, []).append((name, dict(figures)))


def render() -> str:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Reliability report",
        "",
        f"Produced by the test suite on {now} ({platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}). Regenerate with `make reliability`.",
        "",
    ]
    for section, rows in _SECTIONS.items():
        lines += [f"## {_TITLES.get(section, section)}", ""]
        keys = sorted({k for _, figures in rows for k in figures})
        lines.append("| case | " + " | ".join(keys) + " |")
        lines.append("|---|" + "---|" * len(keys))
        for name, figures in rows:
            lines.append(f"| {name} | " + " | ".join(str(figures.get(k, "")) for k in keys) + " |")
        lines.append("")
    return "\n".join(lines)


def write() -> None:
    if not _SECTIONS:
        return
    text = render()
    artifacts = ROOT / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    (artifacts / "reliability.md").write_text(text)
    if os.environ.get("IM_WRITE_RELIABILITY_DOC") == "1":
        (ROOT / "docs").mkdir(exist_ok=True)
        (ROOT / "docs" / "reliability.md").write_text(text)
