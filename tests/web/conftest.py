"""Fixtures for the web client tests: Debian's headless Chromium driven by Playwright's async API.

The browser is the system one (``/usr/bin/chromium``, installed by scripts/install-system-deps.sh);
Playwright's own browser download (``playwright install``) is never used. Without chromium (or
without the playwright package) the tests are skipped with the reason.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM_PATH = os.environ.get("IM_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
ARTIFACTS_DIR = Path(__file__).resolve().parents[2] / "test-artifacts" / "web"


def _chromium_missing() -> str | None:
    if not (Path(CHROMIUM_PATH).is_file() and os.access(CHROMIUM_PATH, os.X_OK)) and not shutil.which("chromium"):
        return f"chromium is not installed at {CHROMIUM_PATH} (scripts/install-system-deps.sh installs it)"
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "the playwright package is missing (pip install -e '.[test]')"
    return None


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    reason = _chromium_missing()
    if reason:
        pytest.skip(reason)
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM_PATH, args=CHROMIUM_ARGS,
                                                    timeout=60_000)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
def artifacts_dir() -> Path:
    ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS_DIR
