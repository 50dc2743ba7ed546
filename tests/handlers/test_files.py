"""Files: streamed upload into GridFS (encrypted), file messages, download rights, the size limit."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from config import Settings
from tests.conftest import make_settings
from tests.helpers import Node, drain_inbox, running_node

MISSING_ID = "ffffffffffffffffffffffff"


async def upload(node: Node, token: str, data: bytes, *, content_type: str = "application/octet-stream",
                 **target: str):
    return await node.request("POST", "/api/v1/files", token=token, raw_body=data, query=target,
                              headers={"Content-Type": content_type})


async def test_upload_send_download(node: Node) -> None:
    alice, bob, carol = await node.user("alice"), await node.user("bob"), await node.user("carol")
    data = os.urandom(200_000) + b"PLAINTEXT-MARKER" * 100  # several encryption segments
    up = await upload(node, alice, data, content_type="image/png", to="bob", name="pic.png")
    assert up.status == 201, up.body
    file_id = up.body["file_id"]
    assert up.body == {"file_id": file_id, "conv": "d:alice:bob", "name": "pic.png", "size": len(data),
                       "content_type": "image/png"}
    sent = await node.request("POST", "/api/v1/messages", token=alice, json_body={
        "to": "bob", "kind": "file", "body": file_id, "client_msg_id": "f1"})
    assert sent.status == 201, sent.body
    messages, _ = await drain_inbox(node, bob)
    assert [(m["kind"], m["body"]) for m in messages] == [
        ("file", {"file_id": file_id, "name": "pic.png", "size": len(data), "content_type": "image/png"})]
    for token in (alice, bob):
        got = await node.request("GET", f"/api/v1/files/{file_id}", token=token)
        assert got.status == 200 and got.body == data
        assert got.headers["Content-Type"] == "image/png"
        assert got.headers["X-Content-Type-Options"] == "nosniff"
        assert "attachment" in got.headers["Content-Disposition"]
    # Anyone else: the same answer as for a file that does not exist.
    hidden = await node.request("GET", f"/api/v1/files/{file_id}", token=carol)
    missing = await node.request("GET", f"/api/v1/files/{MISSING_ID}", token=carol)
    assert hidden.status == missing.status == 404 and hidden.body == {**missing.body, "error": {
        **missing.body["error"], "message": hidden.body["error"]["message"]}}
    assert hidden.error_code == missing.error_code == "unknown_file"
    assert (await node.request("GET", f"/api/v1/files/{file_id}")).status == 401
    # The stored chunks are ciphertext.
    chunks = node.service.store.db["files.chunks"]
    stored = b"".join([bytes(c["data"]) async for c in chunks.find({})])
    assert b"PLAINTEXT-MARKER" not in stored and len(stored) > len(data)


async def test_file_messages_need_own_file_of_the_conversation(node: Node) -> None:
    alice, bob, _ = await node.user("alice"), await node.user("bob"), await node.user("carol")
    for_bob = (await upload(node, alice, b"for bob", to="bob")).body["file_id"]
    for_carol = (await upload(node, alice, b"for carol", to="carol")).body["file_id"]
    cases = [
        (alice, "bob", for_carol),      # uploaded for another conversation
        (bob, "alice", for_bob),        # not bob's upload
        (alice, "bob", MISSING_ID),
        (alice, "bob", "not-an-id"),
    ]
    for token, to, body in cases:
        response = await node.request("POST", "/api/v1/messages", token=token, json_body={
            "to": to, "kind": "file", "body": body, "client_msg_id": f"x{body}"})
        assert response.status == 404 and response.error_code == "unknown_file", (to, body, response.body)
    assert await node.service.store.messages.count_documents({}) == 0


async def test_group_files_and_bad_uploads(node: Node) -> None:
    owner, ann, eve = await node.user("owner"), await node.user("ann"), await node.user("eve")
    gid = (await node.request("POST", "/api/v1/groups", token=owner,
                              json_body={"name": "g", "members": ["ann"]})).body["group"]
    up = await upload(node, ann, b"group doc", content_type="text/plain; charset=utf-8", group=gid)
    assert up.status == 201 and up.body["conv"] == f"g:{gid}"
    file_id = up.body["file_id"]
    got = await node.request("GET", f"/api/v1/files/{file_id}", token=owner)
    assert got.status == 200 and got.body == b"group doc" and got.headers["Content-Type"].startswith("text/plain")
    assert (await node.request("GET", f"/api/v1/files/{file_id}", token=eve)).status == 404
    assert (await upload(node, eve, b"x", group=gid)).error_code == "unknown_group"
    assert (await upload(node, ann, b"x")).status == 400  # no conversation named
    assert (await upload(node, ann, b"x", to="ann", group=gid)).status == 400
    assert (await upload(node, ann, b"x", to="nobody")).error_code == "unknown_recipient"
    odd = await upload(node, ann, b"", content_type="<script>", to="owner")
    assert odd.status == 201 and odd.body["content_type"] == "application/octet-stream" and odd.body["size"] == 0
    empty = await node.request("GET", f"/api/v1/files/{odd.body['file_id']}", token=owner)
    assert empty.status == 200 and empty.body in (b"", None)


@pytest.fixture
async def small_files(settings: Settings, tmp_path: Path) -> AsyncIterator[Node]:
    async with running_node(make_settings(settings.mongo_url, settings.mongo_db, tmp_path,
                                          file_max_bytes=100_000)) as running:
        yield running


async def test_size_limit(small_files: Node) -> None:
    node = small_files
    alice, _ = await node.user("alice"), await node.user("bob")
    ok = await upload(node, alice, b"x" * 100_000, to="bob")
    assert ok.status == 201
    too_big = await upload(node, alice, b"x" * 100_001, to="bob")
    assert too_big.status == 413 and too_big.error_code == "file_too_large"
    # Chunked (no Content-Length): refused while streaming, and the partial file is dropped.
    async def body(write) -> None:  # type: ignore[no-untyped-def]
        for _ in range(30):
            await write(b"y" * 10_000)

    import tornado.httpclient

    response = await node.http.fetch(
        f"{node.base_url}/api/v1/files?to=bob", method="POST", body_producer=body, raise_error=False,
        headers={"Authorization": f"Bearer {alice}", "Transfer-Encoding": "chunked"}, request_timeout=30,
    )
    assert isinstance(response, tornado.httpclient.HTTPResponse) and response.code == 413
    files = node.service.store.db["files.files"]
    assert await files.count_documents({}) == 1  # only the good one
    assert await node.service.store.db["files.chunks"].count_documents({}) == 1
