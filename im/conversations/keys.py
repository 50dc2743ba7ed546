"""Master key handling and its rotation command.

Rotating the master key (``IM_MASTER_KEY``) without downtime::

    1. restart the nodes with IM_MASTER_KEY=<new> and IM_MASTER_OLD_KEYS=<old>
       (they wrap new data keys with the new key and still unwrap the old ones);
    2. python -m im.conversations.keys rotate --old <old> --new <new>
       [the server's flags, e.g. --mongo-url ...]
       (re-wraps every data key; safe to run again, it only touches keys still wrapped by <old>);
    3. restart the nodes without IM_MASTER_OLD_KEYS.

With the generated key (no IM_MASTER_KEY), <old> is the content of ``<data_dir>/master_key``; add
``--write-key-file`` to store <new> there (mode 0600) once the data keys are re-wrapped. Message bodies
are not re-encrypted: they are encrypted with the data keys, which do not change.
``python -m im.conversations.keys new`` prints a fresh random key.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bson import Binary
from pymongo.asynchronous.collection import AsyncCollection

from config import Settings, load_settings
from im.conversations.crypto import KeyRing, MasterKey
from im.storage.secrets_file import load_or_create_secret

__all__ = ["keyring_from", "main", "rotate_master_key"]

log = logging.getLogger(__name__)

MASTER_KEY_FILE = "master_key"
KEYS_COLLECTION = "conv_keys"


def keyring_from(settings: Settings, collection: AsyncCollection[dict[str, Any]]) -> KeyRing:
    """The node's key ring: ``master_key`` from settings, else generated once into the data dir."""
    secret = settings.master_key
    if not secret and settings.redis_url:
        log.warning("cluster mode without IM_MASTER_KEY: every node sharing the database must use the same "
                    "master key (set IM_MASTER_KEY on all of them) to read each other's messages")
    if not secret:
        secret = load_or_create_secret(
            settings.data_dir, MASTER_KEY_FILE,
            protects="it encrypts every stored message body and file, which cannot be read again without it; "
                     "store it apart from the database")
    old = [MasterKey(s.strip()) for s in settings.master_old_keys.split(",") if s.strip()]
    return KeyRing(collection, MasterKey(secret), old_masters=old, cache_size=settings.data_key_cache_size)


async def rotate_master_key(collection: AsyncCollection[dict[str, Any]], old: str, new: str) -> int:
    """Re-wrap every data key wrapped by ``old`` with ``new``; returns how many were re-wrapped.

    Each key is updated on its own, conditioned on still carrying the old ``kid``, so the command can be
    interrupted and run again, and never overwrites a key another process re-wrapped meanwhile.
    Refuses (``ValueError``) before writing anything when ``old`` cannot unwrap the keys it should.
    """
    old_key, new_key = MasterKey(old), MasterKey(new)
    if old_key.kid == new_key.kid:
        raise ValueError("the old and new master keys are the same")
    count = 0
    async for doc in collection.find({"kid": old_key.kid}):
        conv = doc["_id"]
        try:
            data_key = old_key.unwrap(conv, bytes(doc["key"]))
        except Exception:
            raise ValueError(f"the data key of {conv} does not open with the old master key") from None
        result = await collection.update_one(
            {"_id": conv, "kid": old_key.kid},
            {"$set": {"key": Binary(new_key.wrap(conv, data_key)), "kid": new_key.kid}},
        )
        count += result.modified_count
    return count


async def _rotate(settings: Settings, old: str, new: str) -> tuple[int, int]:
    from im.storage.embedded import EmbeddedMongo
    from im.storage.store import Store

    embedded = None
    url = settings.mongo_url
    if not url:
        data = Path(settings.data_dir)
        embedded = EmbeddedMongo(data / "mongo", log_path=data / "secantus.log").start()
        url = embedded.url
    store = Store(url, settings.mongo_db, write_concern=settings.write_concern,
                  timeout_secs=settings.store_timeout_secs)
    try:
        collection = store.db[KEYS_COLLECTION]
        rotated = await rotate_master_key(collection, old, new)
        left = await collection.count_documents({"kid": {"$ne": MasterKey(new).kid}})
        return rotated, left
    finally:
        await store.close()
        if embedded is not None:
            embedded.stop()


def _write_key_file(data_dir: str, secret: str) -> Path:
    path = Path(data_dir) / MASTER_KEY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".new")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secret + "\n")
    tmp.replace(path)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m im.conversations.keys",
        description="Master key tools (see the module docstring for rotation).",
        epilog="Other flags are the server's (python server.py --help), e.g. --mongo-url, --mongo-db.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("new", help="print a fresh random master key")
    rotate = sub.add_parser("rotate", help="re-wrap every data key from the old master key to the new one")
    rotate.add_argument("--old", help="the current master key (default: the data dir's master_key file)")
    rotate.add_argument("--new", required=True, help="the new master key")
    rotate.add_argument("--write-key-file", action="store_true",
                        help="afterwards store the new key in <data_dir>/master_key")
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    if args.command == "new":
        print(secrets.token_urlsafe(32))
        return 0
    settings = load_settings(rest)
    old = args.old
    if not old:
        key_file = Path(settings.data_dir) / MASTER_KEY_FILE
        if not key_file.exists():
            print(f"im.conversations.keys: no --old given and no {key_file}", file=sys.stderr)
            return 2
        old = key_file.read_text().strip()
    try:
        rotated, left = asyncio.run(_rotate(settings, old, args.new))
    except ValueError as exc:
        print(f"im.conversations.keys: {exc}", file=sys.stderr)
        return 1
    print(f"re-wrapped {rotated} data key(s); {left} still wrapped by another key")
    if left:
        # Some keys were wrapped by neither: keep the key file as it is, or they could become unreadable.
        print("im.conversations.keys: not every data key is wrapped by the new key; check --old",
              file=sys.stderr)
        return 1
    if args.write_key_file:
        print(f"wrote the new key to {_write_key_file(settings.data_dir, args.new)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
