"""The README's examples run as they stand, against a real server started by the test.

A fenced block is runnable when its info string has the word ``runnable`` (```` ```sh runnable ````,
```` ```python runnable ````; renderers take only the first word as the language). Each runnable block
runs in a process of its own against a fresh node on its own port: the README's ``localhost:8888`` /
``127.0.0.1:8888`` become that port, nothing else changes. Shell blocks run under ``bash -euo
pipefail``, so a failed command (curl with ``--fail-with-body`` fails on an HTTP error) fails the test.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import Node

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
RUNNABLE = "runnable"
README_ADDRESS = re.compile(r"\b(?:localhost|127\.0\.0\.1):8888\b")
RUN_TIMEOUT_SECS = 90
# Sections whose examples must stay runnable, and what their run must print (plain substrings).
EXPECTED_OUTPUT: dict[tuple[str, str], list[str]] = {
    ("Quick start", "sh"): ['"client_msg_id":"m-1"', '"body":"hello"', '"cursor":'],
    ("Python SDK (`imclient`)", "python"): ["alice: hello", "[devs] alice: hello devs", "stored:"],
}
INTERPRETERS = {"sh": ["bash", "-euo", "pipefail", "-c"], "python": [sys.executable, "-c"]}


@dataclass(frozen=True, slots=True)
class CodeBlock:
    section: str  # the nearest heading above, without its '#'s
    info: tuple[str, ...]  # the fence's info string, split in words
    code: str
    line: int  # of the opening fence, 1-based

    @property
    def language(self) -> str:
        return self.info[0] if self.info else ""

    @property
    def runnable(self) -> bool:
        return RUNNABLE in self.info[1:]

    def __str__(self) -> str:
        return f"README.md:{self.line} ({self.section}, {self.language})"


def code_blocks(text: str) -> list[CodeBlock]:
    """Every fenced block of a Markdown text, with the section it is in."""
    blocks: list[CodeBlock] = []
    section = ""
    opened: tuple[int, tuple[str, ...]] | None = None
    body: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if opened is None:
            if line.startswith("```"):
                opened, body = (number, tuple(line[3:].split())), []
            elif line.startswith("#"):
                section = line.lstrip("#").strip()
        elif line.startswith("```"):
            blocks.append(CodeBlock(section, opened[1], "\n".join(body) + "\n", opened[0]))
            opened = None
        else:
            body.append(line)
    assert opened is None, f"README.md:{opened[0]}: a fenced block is never closed"
    return blocks


def runnable_blocks() -> list[CodeBlock]:
    return [block for block in code_blocks(README.read_text(encoding="utf-8")) if block.runnable]


def test_the_example_sections_keep_runnable_blocks() -> None:
    runnable = {(block.section, block.language) for block in runnable_blocks()}
    assert set(EXPECTED_OUTPUT) <= runnable, f"runnable blocks: {sorted(runnable)}"
    for block in runnable_blocks():
        assert block.language in INTERPRETERS, f"{block}: no way to run {block.language!r}"


def test_blocks_are_found_with_their_sections() -> None:
    text = "# A\n```sh runnable\necho 1\n```\n## B\ntext\n```python\nx = 1\n```\n"
    assert code_blocks(text) == [CodeBlock("A", ("sh", "runnable"), "echo 1\n", 2),
                                 CodeBlock("B", ("python",), "x = 1\n", 7)]


@pytest.mark.parametrize("block", runnable_blocks(), ids=str)
async def test_a_runnable_example_runs_as_it_stands(node: Node, tmp_path: Path, block: CodeBlock) -> None:
    assert README_ADDRESS.search(block.code), f"{block}: names no server address to point at the test's"
    code = README_ADDRESS.sub(f"127.0.0.1:{node.port}", block.code)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = await asyncio.create_subprocess_exec(
        *INTERPRETERS[block.language], code, cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(process.communicate(), RUN_TIMEOUT_SECS)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    stdout, stderr = out.decode(errors="replace"), err.decode(errors="replace")
    assert process.returncode == 0, f"{block} exited {process.returncode}\n{stdout}\n{stderr}"
    for expected in EXPECTED_OUTPUT.get((block.section, block.language), []):
        assert expected in stdout, f"{block}: {expected!r} not printed\n{stdout}\n{stderr}"
