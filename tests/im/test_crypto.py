"""Encryption at rest: master key wrapping, sealed bodies and file segments, key rotation (real store)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from im.conversations.crypto import SEGMENT_PLAIN_BYTES, KeyRing, MasterKey, SegmentSealer, open_segment
from im.conversations.keys import rotate_master_key
from im.errors import StoreUnavailable
from im.models import Draft
from im.storage.store import Store
from tests.im.conftest import make_inboxes

ROOT = Path(__file__).resolve().parents[2]


def test_master_key_wraps_and_binds_the_conversation() -> None:
    master = MasterKey("correct horse")
    data_key = os.urandom(32)
    wrapped = master.wrap("d:a:b", data_key)
    assert data_key not in wrapped and master.unwrap("d:a:b", wrapped) == data_key
    with pytest.raises(InvalidTag):
        master.unwrap("d:a:c", wrapped)  # a key moved to another conversation does not open
    with pytest.raises(InvalidTag):
        MasterKey("another").unwrap("d:a:b", wrapped)
    assert MasterKey("correct horse").kid == master.kid != MasterKey("another").kid


def test_segments_round_trip_and_detect_tampering() -> None:
    aead = AESGCM(os.urandom(32))
    sealer = SegmentSealer(aead, "f1")
    data = os.urandom(SEGMENT_PLAIN_BYTES * 2 + 123)
    sealed = sealer.feed(data[:1000]) + sealer.feed(data[1000:]) + sealer.finish()
    size = SEGMENT_PLAIN_BYTES + 28
    segments = [sealed[i:i + size] for i in range(0, len(sealed), size)]
    assert len(segments) == 3
    plain = b"".join(open_segment(aead, "f1", i, s, final=i == 2) for i, s in enumerate(segments))
    assert plain == data
    with pytest.raises(InvalidTag):  # truncation: a non-final segment presented as the last one
        open_segment(aead, "f1", 1, segments[1], final=True)
    with pytest.raises(InvalidTag):  # reordering
        open_segment(aead, "f1", 0, segments[1], final=False)
    with pytest.raises(InvalidTag):  # another file's segment
        open_segment(aead, "f2", 0, segments[0], final=False)


async def test_keyring_seals_bodies_with_one_key_per_conversation(store: Store) -> None:
    keys = KeyRing(store.db["conv_keys"], MasterKey("m1"), cache_size=1)
    sealed = await keys.seal("d:a:b", {"text": "hello"})
    assert b"hello" not in sealed and await keys.open("d:a:b", sealed) == {"text": "hello"}
    other = await keys.seal("d:a:c", "x")
    assert await keys.open("d:a:c", other) == "x"  # evicts d:a:b from the 1-entry cache
    # Another node (fresh cache) reads the same stored key; a body moved across conversations fails.
    fresh = KeyRing(store.db["conv_keys"], MasterKey("m1"))
    assert await fresh.open("d:a:b", sealed) == {"text": "hello"}
    with pytest.raises(StoreUnavailable):
        await fresh.open("d:a:c", sealed)
    assert await fresh.open("d:a:b", "stored before encryption") == "stored before encryption"
    assert await store.db["conv_keys"].count_documents({}) == 2
    # A node with the wrong master key refuses to start instead of failing on every read.
    with pytest.raises(RuntimeError, match="not configured"):
        await KeyRing(store.db["conv_keys"], MasterKey("wrong")).check()
    await KeyRing(store.db["conv_keys"], MasterKey("wrong"), old_masters=[MasterKey("m1")]).check()


async def test_inbox_stores_sealed_bodies_and_pulls_them_open(store: Store) -> None:
    keys = KeyRing(store.db["conv_keys"], MasterKey("m1"))
    inbox = make_inboxes(store, device_idle_secs=3600, cipher=keys)
    await inbox.append([Draft(sender="a", to="b", conv="d:a:b", kind="text", body="top secret",
                              client_msg_id="c1", recipients=("b", "a"))])
    archived = await store.messages.find_one({})
    assert archived is not None and b"top secret" not in archived["body"]
    page = await inbox.pull("b", after=0, limit=10)
    assert [m["body"] for m in page.messages] == ["top secret"]


async def test_rotation_rewraps_every_data_key(store: Store) -> None:
    collection = store.db["conv_keys"]
    old = KeyRing(collection, MasterKey("old-key"))
    sealed = {conv: await old.seal(conv, f"body of {conv}") for conv in ("d:a:b", "d:a:c", "g:x")}
    assert await rotate_master_key(collection, "old-key", "new-key") == 3
    assert await collection.count_documents({"kid": MasterKey("new-key").kid}) == 3
    new = KeyRing(collection, MasterKey("new-key"))
    await new.check()
    for conv, body in sealed.items():
        assert await new.open(conv, body) == f"body of {conv}"  # bodies untouched, still readable
    assert await rotate_master_key(collection, "old-key", "new-key") == 0  # running again is harmless
    with pytest.raises(ValueError, match="same"):
        await rotate_master_key(collection, "new-key", "new-key")


def test_rotation_command(mongo, db_name: str, tmp_path: Path) -> None:
    """``python -m im.conversations.keys rotate`` as an operator runs it, against the real store."""

    async def seed() -> None:
        s = Store(mongo.url, db_name, write_concern="1")
        try:
            await KeyRing(s.db["conv_keys"], MasterKey("k-old")).seal("d:a:b", "x")
        finally:
            await s.close()

    import asyncio

    asyncio.run(seed())
    env = {k: v for k, v in os.environ.items() if not k.startswith("IM_")}
    (tmp_path / "master_key").write_text("k-old\n")
    command = [sys.executable, "-m", "im.conversations.keys", "rotate", "--new", "k-new", "--write-key-file",
               "--mongo-url", mongo.url, "--mongo-db", db_name, "--data-dir", str(tmp_path)]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "re-wrapped 1 data key(s); 0 still wrapped by another key" in done.stdout
    assert (tmp_path / "master_key").read_text().strip() == "k-new"
    wrong = subprocess.run([*command[:5], "k-other", "--old", "nope", *command[6:]], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=60)
    assert wrong.returncode == 1  # nothing was wrapped by "nope": refused, and the key file is kept
    assert (tmp_path / "master_key").read_text().strip() == "k-new"
    new = subprocess.run([sys.executable, "-m", "im.conversations.keys", "new"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=60)
    assert new.returncode == 0 and len(new.stdout.strip()) >= 40
