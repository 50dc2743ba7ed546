"""Baseline 1, the store's raw limit: serial ``insert_one`` and ``insert_many`` rates.

Run as ``python -m bench.store_raw`` with a JSON spec on stdin (``url``, ``secs``, ``batch``,
``body_chars``); prints one JSON object. Documents look like the server's archive entries and go through
``pymongo.AsyncMongoClient`` (Motor's successor, the driver the server uses) with the server's write
concern, into a throwaway database that is dropped afterwards.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from typing import Any

from bson import ObjectId
from pymongo import AsyncMongoClient
from pymongo.write_concern import WriteConcern

from im.ops import eventloop

__all__ = ["measure"]


def _doc(index: int, body: str) -> dict[str, Any]:
    return {
        "_id": ObjectId(),
        "conv": "d:a:b",
        "from": "a",
        "to": "b",
        "kind": "text",
        "body": body,
        "cmid": f"c{index}",
        "ts": datetime.now(UTC),
    }


async def measure(
    url: str, *, secs: float, batch: int, body_chars: int, db_name: str, drop: bool = True
) -> dict[str, Any]:
    """Serial insert rates for ``secs`` each. ``drop=False`` leaves the documents behind: on the
    benchmark's own throwaway SecantusDB dropping the ~20,000 documents takes longer (~8 s per 2 s
    measured) than measuring them, and the whole data directory is deleted after the run anyway."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url, tz_aware=True, appname="im-bench")
    body = "x" * body_chars
    try:
        db = client.get_database(db_name, write_concern=WriteConcern(w="majority", j=True))
        coll = db["raw"]
        await coll.insert_one(_doc(-1, body))  # create the collection outside the timing
        count = 0
        started = time.perf_counter()
        while time.perf_counter() - started < secs:
            await coll.insert_one(_doc(count, body))
            count += 1
        one_rate = count / (time.perf_counter() - started)
        docs = 0
        started = time.perf_counter()
        while time.perf_counter() - started < secs:
            await coll.insert_many([_doc(docs + i, body) for i in range(batch)], ordered=True)
            docs += batch
        many_rate = docs / (time.perf_counter() - started)
        if drop:
            await client.drop_database(db_name)
    finally:
        await client.close()
    return {
        "insert_one_per_sec": one_rate,
        "insert_many_docs_per_sec": many_rate,
        "batch": batch,
        "secs": secs,
    }


def main() -> int:
    spec = json.load(sys.stdin)
    result = eventloop.run(  # the loop the server runs on, so the driver's cost is the same
        measure(
            spec["url"],
            secs=spec.get("secs", 5.0),
            batch=spec.get("batch", 100),
            body_chars=spec.get("body_chars", 64),
            db_name=spec.get("db", "bench_raw"),
            drop=spec.get("drop", True),
        )
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
