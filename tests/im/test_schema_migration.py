"""A database written by an older version (inbox entries in a collection of their own) is brought up
to the current layout on start, and its inboxes read on as before."""

from __future__ import annotations

from datetime import UTC, datetime

from bson import ObjectId

from im.models import Draft, direct_conversation_id
from im.storage.embedded import EmbeddedMongo
from im.storage.store import SCHEMA_VERSION, Store
from tests.im.conftest import make_inboxes


async def test_a_version_1_archive_gets_its_inbox_keys_and_its_inboxes_read_on(
        mongo: EmbeddedMongo, db_name: str) -> None:
    old = Store(mongo.url, db_name, write_concern="1")
    # What version 1 wrote for two messages a -> b: counters, archive documents with their recipients'
    # seqs, and entries in the inbox collection (now unused).
    conv = direct_conversation_id("a", "b")
    now = datetime.now(UTC)
    await old.counters.insert_many([{"_id": "a", "seq": 2, "epoch": "ea"}, {"_id": "b", "seq": 2, "epoch": "eb"}])
    for i in (1, 2):
        await old.messages.insert_one({
            "_id": ObjectId(), "conv": conv, "from": "a", "to": "b", "kind": "text", "body": f"old {i}",
            "cmid": f"c{i}", "ts": now, "dk": f"a/c{i}", "rcpt": [{"u": "b", "s": i}, {"u": "a", "s": i}],
        })
        await old.db["inbox"].insert_one({"user": "b", "seq": i, "body": f"old {i}"})
    await old.close()

    store = Store(mongo.url, db_name, write_concern="1")
    try:
        await store.ensure_indexes()
        await store.ensure_indexes()  # a second start finds nothing to do
        assert (await store.db["meta"].find_one({"_id": "schema"}) or {}).get("version") == SCHEMA_VERSION
        inbox = make_inboxes(store, device_idle_secs=3600)
        page = await inbox.pull("b", after=0, limit=10)
        assert [(m["seq"], m["body"]) for m in page.messages] == [(1, "old 1"), (2, "old 2")]
        assert page.epoch == "eb"
        # New messages go on after the old seqs, and one of those cannot be given again.
        (receipt,) = await inbox.append([Draft(sender="a", to="b", conv=conv, kind="text", body="new",
                                               client_msg_id="c3", recipients=("b", "a"))])
        assert receipt.seqs == {"b": 3, "a": 3}
        page = await inbox.pull("b", after=1, limit=10)
        assert [(m["seq"], m["body"]) for m in page.messages] == [(2, "old 2"), (3, "new")]
        # Schema 4: the pair is listed, started at its first message.
        (pair,) = await store.db["conversations"].find({}).to_list(None)
        assert pair["_id"] == conv and pair["members"] == ["a", "b"]
        assert abs((pair["started"] - now).total_seconds()) < 2
    finally:
        await store.close()
