"""Where the server's time goes: py-spy samples of the server process, folded into top-N tables.

py-spy attaches from outside (no code in the server) and samples only threads that are running, so
``busy_share`` (samples / (rate x seconds)) is how much of one core the server used while sampled.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

__all__ = ["LOOP_FRAMES", "fold", "record", "summarize_folded"]

SAMPLE_RATE_HZ = 200
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]+)(?::\d+)?\)$")
# Buckets for "which layer is responsible": a sample belongs to the innermost frame of one of these
# packages (so socket writes made by the driver count as the driver's); stdlib-only stacks are the loop.
LAYERS = (
    ("store driver (pymongo/bson)", ("pymongo/", "bson/")),
    ("our domain (im/)", ("im/",)),
    ("our handlers (handlers/)", ("handlers/",)),
    ("tornado", ("tornado/",)),
    ("codecs (msgpack/json)", ("msgpack/", "json/")),
    ("auth (jwt)", ("jwt/",)),
)
EVENT_LOOP_LAYER = "event loop and stdlib (asyncio, selectors, ssl...)"
# The loop's bootstrap (``im.ops.eventloop.run``, under which uvloop's C code runs) is in every stack:
# it names no layer. Counted as "our domain", it took every sample of the loop's own C code with it.
BOOTSTRAP_FILES = ("im/ops/eventloop.py",)
LOOP_FRAMES = frozenset(
    {"<module>", "run", "_run_once", "run_forever", "run_until_complete", "main", "serve", "_run"}
)


def py_spy() -> str | None:
    candidate = Path(sys.executable).parent / "py-spy"
    return str(candidate) if candidate.exists() else shutil.which("py-spy")


def record(pid: int, secs: float, out_path: Path) -> bool:
    """Sample ``pid`` for ``secs`` into ``out_path`` (folded stacks); False when py-spy is unavailable
    or may not attach (it needs ptrace rights over the process)."""
    exe = py_spy()
    if exe is None:
        return False
    try:
        done = subprocess.run(
            [
                exe,
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(max(1, round(secs))),
                "--rate",
                str(SAMPLE_RATE_HZ),
                "--format",
                "raw",
                "--output",
                str(out_path),
                "--nonblocking",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=secs + 60,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False  # a heavily loaded machine: no profile rather than a stuck benchmark
    return done.returncode == 0 and out_path.exists()


def _frame(text: str) -> tuple[str, str]:
    match = _FRAME.match(text.strip())
    if match is None:
        return text.strip(), ""
    return match["func"], match["file"]


def fold(lines: list[str]) -> list[tuple[list[tuple[str, str]], int]]:
    """Parse py-spy raw output: ``frame;frame;... count`` (outermost first)."""
    stacks = []
    for line in lines:
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        stacks.append(([_frame(f) for f in stack.split(";") if f], int(count)))
    return stacks


def _short(func: str, file: str) -> str:
    parts = Path(file).parts
    for anchor in ("site-packages", "im", "handlers", "lib"):
        if anchor in parts:
            rest = parts[parts.index(anchor) + (1 if anchor in ("site-packages", "lib") else 0) :]
            return f"{func} ({'/'.join(rest[-3:])})"
    return f"{func} ({'/'.join(parts[-2:])})"


def _layer(frames: list[tuple[str, str]]) -> str:
    for _, file in reversed(frames):
        if file.endswith(BOOTSTRAP_FILES):
            continue
        for name, needles in LAYERS:
            if any(file.startswith(n) or "/" + n in file for n in needles):
                return name
    return EVENT_LOOP_LAYER


def summarize_folded(
    text: str, *, secs: float, rate_hz: int = SAMPLE_RATE_HZ, top: int = 12
) -> dict[str, Any]:
    stacks = fold(text.splitlines())
    total = sum(count for _, count in stacks)
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    layers: Counter[str] = Counter()
    for frames, count in stacks:
        if not frames:
            continue
        func, file = frames[-1]
        own[_short(func, file)] += count
        layers[_layer(frames)] += count
        for name in {_short(f, p) for f, p in frames}:
            inclusive[name] += count

    def rows(counter: Counter[str]) -> list[dict[str, Any]]:
        return (
            [{"name": name, "share": count / total} for name, count in counter.most_common(top)]
            if total
            else []
        )

    return {
        "samples": total,
        "busy_share": total / max(1.0, rate_hz * secs),
        "self": rows(own),
        # Event-loop plumbing (run_forever, _run_once, Handle._run...) is in every stack: ~100 % that
        # says nothing, so it is left out by function name (the class prefix varies).
        "inclusive": [
            r
            for r in rows(Counter(dict(inclusive.most_common(top + 30))))
            if r["name"].split(" (", 1)[0].rsplit(".", 1)[-1] not in LOOP_FRAMES
        ][:top],
        "layers": rows(layers),
    }
