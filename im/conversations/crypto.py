"""Encryption at rest: AES-GCM with per-conversation data keys wrapped by a master key.

Why two levels: every message body and file of a conversation is encrypted with that conversation's
random 256-bit data key; the data keys are stored in the ``conv_keys`` collection, each encrypted
("wrapped") by the master key (``IM_MASTER_KEY``, or a key generated into the data dir). A database dump
alone therefore reveals no body, and rotating the master key re-wraps a few hundred bytes per
conversation instead of re-encrypting every message (``python -m im.conversations.keys rotate``).

Caveats: the conversation id, sender, recipients, kind, timestamps and sizes stay in clear (they are
needed for routing and indexes); only bodies and file contents are encrypted. Anyone holding the master
key and a dump can read everything, so keep the key out of the database's backups.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable
from typing import Any

from bson import Binary
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from im.errors import StoreUnavailable
from im.lru import LruDict
from im.storage.store import store_errors, utcnow

__all__ = [
    "SEGMENT_OVERHEAD_BYTES", "SEGMENT_PLAIN_BYTES", "KeyRing", "MasterKey", "SegmentSealer", "open_segment",
]

log = logging.getLogger(__name__)

NONCE_BYTES = 12  # the GCM standard nonce; random per encryption (2^-32 collision bound at 2^32 uses/key)
TAG_BYTES = 16
DATA_KEY_BYTES = 32
# First byte of every sealed body: lets a later format coexist with this one.
BODY_FORMAT_V1 = b"\x01"
# File contents are sealed in segments of this many plaintext bytes, so uploads and downloads stream
# with bounded memory; each segment carries its own nonce and tag.
SEGMENT_PLAIN_BYTES = 64 * 1024
SEGMENT_OVERHEAD_BYTES = NONCE_BYTES + TAG_BYTES
# Unwrapped data keys kept in memory (a lookup per message otherwise); 10k keys are ~1 MiB.
DEFAULT_KEY_CACHE_SIZE = 10_000


class MasterKey:
    """A key-encryption key derived (HKDF-SHA256) from an operator-supplied secret string.

    Any string works (a generated one is 43 url-safe characters); ``kid`` names the key without
    revealing it, so each wrapped data key records which master key wrapped it.
    """

    def __init__(self, secret: str) -> None:
        if not secret:
            raise ValueError("the master key must not be empty")
        raw = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"im-master-key-v1", info=b"wrap data keys"
                   ).derive(secret.encode())
        self.kid = hashlib.sha256(b"kid:" + raw).hexdigest()[:16]
        self._aead = AESGCM(raw)

    def wrap(self, conv: str, data_key: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, data_key, b"dk:" + conv.encode())

    def unwrap(self, conv: str, wrapped: bytes) -> bytes:
        return self._aead.decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], b"dk:" + conv.encode())


class KeyRing:
    """Per-conversation data keys: created on first use, stored wrapped, cached unwrapped (bounded).

    ``old_masters`` are accepted for unwrapping only: during a rotation, nodes run with the new key
    as master and the old one here until ``python -m im.conversations.keys rotate`` has re-wrapped every
    data key.
    """

    def __init__(self, collection: AsyncCollection[dict[str, Any]], master: MasterKey, *,
                 old_masters: Iterable[MasterKey] = (), cache_size: int = DEFAULT_KEY_CACHE_SIZE) -> None:
        self._keys = collection
        self.master = master
        self._masters = {m.kid: m for m in (*old_masters, master)}
        self._cache: LruDict[str, AESGCM] = LruDict(cache_size)

    async def check(self) -> None:
        """Refuse to start when stored data keys are wrapped by a master key this node does not have."""
        async with store_errors("checking data keys"):
            unknown = await self._keys.find_one({"kid": {"$nin": list(self._masters)}}, {"kid": 1})
        if unknown is not None:
            raise RuntimeError(
                f"stored data keys are wrapped by master key {unknown['kid']}, which is not configured: set "
                "IM_MASTER_KEY (or IM_MASTER_OLD_KEYS during a rotation) to the key that wrote them"
            )

    async def created_at(self, conv: str) -> Any:
        """When the conversation's data key was made (just before its first message), or None."""
        async with store_errors("reading a data key"):
            doc = await self._keys.find_one({"_id": conv}, {"created_at": 1})
        return None if doc is None else doc["created_at"]

    async def aead(self, conv: str) -> AESGCM:
        """The conversation's cipher, creating and storing its data key the first time."""
        cached = self._cache.touch(conv)
        if cached is not None:
            return cached
        async with store_errors("reading a data key"):
            doc = await self._keys.find_one({"_id": conv})
            if doc is None:
                data_key = os.urandom(DATA_KEY_BYTES)
                try:
                    await self._keys.insert_one({"_id": conv, "key": Binary(self.master.wrap(conv, data_key)),
                                                 "kid": self.master.kid, "created_at": utcnow()})
                except DuplicateKeyError:  # another node created it first: use theirs
                    doc = await self._keys.find_one({"_id": conv})
        if doc is not None:
            data_key = self._unwrap(conv, doc)
        aead = AESGCM(data_key)
        self._cache.put(conv, aead)
        return aead

    def _unwrap(self, conv: str, doc: dict[str, Any]) -> bytes:
        master = self._masters.get(doc.get("kid", ""))
        try:
            if master is None:
                raise InvalidTag()
            return master.unwrap(conv, bytes(doc["key"]))
        except InvalidTag:
            log.error("data key of %s cannot be unwrapped (kid %s): wrong master key?", conv, doc.get("kid"))
            raise StoreUnavailable("a stored key cannot be decrypted with this node's master key") from None

    # -- message bodies -------------------------------------------------------------------------------

    async def seal(self, conv: str, body: Any) -> Binary:
        """Encrypt a JSON-able body; the conversation id is bound in as associated data."""
        aead = await self.aead(conv)
        nonce = os.urandom(NONCE_BYTES)
        plain = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        return Binary(BODY_FORMAT_V1 + nonce + aead.encrypt(nonce, plain, b"body:" + conv.encode()))

    async def open(self, conv: str, stored: Any) -> Any:
        """Decrypt what :meth:`seal` made; anything else (stored before encryption) is returned as is."""
        if not isinstance(stored, bytes) or stored[:1] != BODY_FORMAT_V1:
            return stored
        aead = await self.aead(conv)
        nonce, sealed = stored[1:1 + NONCE_BYTES], stored[1 + NONCE_BYTES:]
        try:
            return json.loads(aead.decrypt(nonce, sealed, b"body:" + conv.encode()))
        except InvalidTag:
            log.error("a body of %s failed authentication (tampered or wrong key)", conv)
            raise StoreUnavailable("a stored message cannot be decrypted") from None


# -- file contents ------------------------------------------------------------------------------------


def _segment_aad(file_id: str, index: int, final: bool) -> bytes:
    # Binding the index and the final flag makes reordered, dropped or truncated segments fail to open.
    return f"file:{file_id}:{index}:{int(final)}".encode()


class SegmentSealer:
    """Turns a stream of plaintext chunks into sealed segments of :data:`SEGMENT_PLAIN_BYTES` each.

    The last segment (0..SEGMENT_PLAIN_BYTES bytes) is marked final and comes from :meth:`finish`.
    """

    def __init__(self, aead: AESGCM, file_id: str) -> None:
        self._aead = aead
        self._file_id = file_id
        self._buffer = bytearray()
        self._index = 0

    def feed(self, chunk: bytes) -> bytes:
        """Sealed segments completed by ``chunk`` (possibly none)."""
        self._buffer += chunk
        out = bytearray()
        # Keep at least one byte back: the final segment must come from finish().
        while len(self._buffer) > SEGMENT_PLAIN_BYTES:
            out += self._seal(bytes(self._buffer[:SEGMENT_PLAIN_BYTES]), final=False)
            del self._buffer[:SEGMENT_PLAIN_BYTES]
        return bytes(out)

    def finish(self) -> bytes:
        sealed = self._seal(bytes(self._buffer), final=True)
        self._buffer = bytearray()
        return sealed

    def _seal(self, plain: bytes, *, final: bool) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        sealed = nonce + self._aead.encrypt(nonce, plain, _segment_aad(self._file_id, self._index, final))
        self._index += 1
        return sealed


def open_segment(aead: AESGCM, file_id: str, index: int, sealed: bytes, *, final: bool) -> bytes:
    """Decrypt one segment written by :class:`SegmentSealer`; raises ``InvalidTag`` when tampered."""
    return aead.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], _segment_aad(file_id, index, final))
