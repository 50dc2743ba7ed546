"""What every part of the inboxes works with, built once by ``Inboxes``."""

from __future__ import annotations

from dataclasses import dataclass

from im.conversations.crypto import KeyRing
from im.delivery.cache import InboxCache
from im.delivery.seqs import Seqs
from im.storage.store import Store

__all__ = ["InboxParts"]


@dataclass(frozen=True, slots=True)
class InboxParts:
    store: Store
    seqs: Seqs
    cache: InboxCache | None  # None: every pull reads the store
    cipher: KeyRing | None  # None: bodies are stored in clear
