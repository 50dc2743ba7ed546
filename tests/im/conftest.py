"""Fixtures of the domain tests: a real store on the session's SecantusDB, in a database of the test's own."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from im.storage.embedded import EmbeddedMongo
from im.storage.store import Store


@pytest.fixture
async def store(mongo: EmbeddedMongo, db_name: str) -> AsyncIterator[Store]:
    s = Store(mongo.url, db_name, write_concern="1")
    await s.ensure_indexes()
    try:
        yield s
    finally:
        await s.close()
