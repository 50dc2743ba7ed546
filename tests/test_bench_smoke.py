"""The benchmark harness runs end to end at its smallest sizes and writes its report.

Behaviour only: the report and plots exist and have their tables. No figure is asserted (speed is the
benchmark's business, on a quiet machine, never a test's).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

pytest.importorskip("tqdm", reason="the bench extra is not installed")
pytest.importorskip("matplotlib", reason="the bench extra is not installed")
pytest.importorskip("socketio", reason="the bench extra is not installed")


@pytest.mark.timeout(420)
def test_quick_run_writes_the_report_with_every_table(tmp_path: Path) -> None:
    out = tmp_path / "results"
    done = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--no-progress", "--out", str(out)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = (out / "REPORT.md").read_text()
    for heading in (
        "## Summary against the targets",
        "## Baseline 1: the store's raw limit",
        "## 1:1 chat at increasing rates",
        "### ours (durable)",
        "### bare Tornado",
        "### python-socketio",
        "### Ours as ratios to the baselines",
        "## A group",
        "## Idle connections on one server process",
        "## Reconnect storm",
        "## Where the server's time goes",
        "## Scale-out: one node and two",
        "### A group written from both nodes",
        "## REST senders (API callers) next to the SDK",
        "### Where a REST send's time goes",
    ):
        assert heading in report, heading
    assert "## Parts that failed" not in report, report
    assert "| SecantusDB |" in report
    assert "| SecantusDB, again after ours' ladder |" in report  # the machine's drift, measured
    for plot in ("chat.png", "timeline.png"):
        assert (out / plot).read_bytes().startswith(b"\x89PNG"), plot
    for heading in ("### Ours: notify-to-receive", "## Where the run's time went"):
        assert heading in report, heading
    assert "notify-to-receive p99 at 1000 msg/s (ms)" in report
    # The chat tables have 13 columns (offered/s, delivered/s, own in window/s ... loadgen CPU).
    chat_rows = [line for line in report.splitlines() if line.startswith("| ") and line.count("|") == 14]
    assert chat_rows, "no chat rows"
    # Every measured step delivered something, by both measures.
    for row in chat_rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        if cells[0][0].isdigit():
            assert float(cells[1].replace(",", "")) > 0 and float(cells[2].replace(",", "")) > 0, row
    # The storm's clients all caught up (a broken delivery callback shows here as 0).
    storm = report.split("## Reconnect storm", 1)[1].split("\n## ", 1)[0]
    storm_row = next(line for line in storm.splitlines() if line.startswith("| ") and line[2].isdigit())
    cells = [c.strip() for c in storm_row.strip("|").split("|")]
    assert cells[0] == cells[1], storm_row
    # The scale-out jobs (one node, then two; WebSocket and long-poll receivers) each sent and delivered.
    scaleout = report.split("## Scale-out: one node and two", 1)[1].split("Two nodes against one", 1)[0]
    job_rows = [line for line in scaleout.splitlines() if line.startswith(("| one node", "| two nodes"))]
    assert len(job_rows) == 4, scaleout
    for row in job_rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert int(cells[1].replace(",", "")) > 0 and float(cells[2].replace(",", "")) > 0, row
    _assert_rest_part_delivered_everything(report)


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _number(cell: str) -> float:
    return float(cell.replace(",", ""))


def _assert_rest_part_delivered_everything(report: str) -> None:
    """Every round of the REST part (paced REST and SDK senders, WebSocket and long-poll receivers; the
    closed loops, ours and bare Tornado's) delivered each acknowledged send once, in order."""
    part = report.split("## REST senders (API callers) next to the SDK", 1)[1].split("\n## ", 1)[0]
    paced = part.split("### Paced", 1)[1].split("REST send -> receipt against", 1)[0]
    paced_rows = [_cells(line) for line in paced.splitlines() if line.startswith(("| WebSocket", "| long-poll"))]
    # Two rates, two kinds of sender, two kinds of receiver; columns: ... sends acked (5), delivered (6),
    # ... lost (12), duplicated (13), reordered (14).
    assert len(paced_rows) == 8, paced
    for cells in paced_rows:
        assert _number(cells[5]) > 0 and cells[5] == cells[6], cells
        assert cells[12:15] == ["0", "0", "0"], cells
    closed = part.split("### Closed loop", 1)[1].split("\n### ", 1)[0]
    closed_rows = [_cells(line) for line in closed.splitlines() if line.startswith(("| ours", "| bare"))]
    # Bare Tornado before ours, ours with WebSocket receivers (and its round under py-spy), with
    # long-poll receivers, bare Tornado after; columns: sends acked (1), delivered (2), ... lost (8),
    # duplicated (9), reordered (10).
    assert len(closed_rows) == 5, closed
    for cells in closed_rows:
        assert _number(cells[1]) > 0 and cells[1] == cells[2], cells
        assert cells[8:11] == ["0", "0", "0"], cells
