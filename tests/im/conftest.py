"""Fixtures of the domain tests: a real store on the session's SecantusDB, in a database of the test's own."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Any

import pytest

from im.delivery.cache import InboxCache
from im.delivery.heads import HeadBook
from im.delivery.inboxes import Inboxes
from im.delivery.leases import InboxLeases
from im.delivery.seqs import Seqs
from im.models import Draft, direct_conversation_id
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


def make_inboxes(store: Store, *, sole_writer: bool = False, cache: InboxCache | None = None,
                 head_save_secs: float = 5.0, head_trust_secs: float = 0.0, device_idle_secs: float = 24 * 3600,
                 leases: InboxLeases | None = None, **options: Any) -> Inboxes:
    """Inboxes as one node (``sole_writer``: the only writer, trusting the heads it knows for good) or
    a cluster node would run them (its pulls trusting a learned head for ``head_trust_secs``)."""
    trust_secs = math.inf if sole_writer else head_trust_secs
    seqs = Seqs(store, HeadBook(store, save_secs=head_save_secs, trust_secs=trust_secs), leases)
    return Inboxes(store, seqs, device_idle_secs=device_idle_secs, max_devices_per_user=3, cache=cache,
                   **options)


def draft(sender: str, to: str, cmid: str, body: Any = "hi") -> Draft:
    """A one-to-one text draft from ``sender`` to ``to`` (both get an entry)."""
    return Draft(sender=sender, to=to, conv=direct_conversation_id(sender, to), kind="text", body=body,
                 client_msg_id=cmid, recipients=(to, sender))
