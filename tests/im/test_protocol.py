"""Frame codec and field validation: every error names its field; nothing malformed gets through."""

from __future__ import annotations

import json

import msgpack
import pytest

from im.errors import InvalidInput, TooLarge
from im.protocol import decode_frame, decode_json_body, encode_frame, parse_pull, parse_send, read_int


@pytest.mark.parametrize("data", [
    "{not json", "[1,2]", '"text"', "null", '{"t": 5}', "{}", b"\xc1", b"\x92\x01", msgpack.packb([1]),
    msgpack.packb({1: "x"}), "[" * 5000 + "]" * 5000, b"\x91" * 5000,
])
def test_malformed_frames_are_refused(data: str | bytes) -> None:
    with pytest.raises(InvalidInput):
        decode_frame(data, max_bytes=1 << 20)


def test_unknown_and_server_only_types_are_refused_naming_t() -> None:
    for kind in ("bogus", "notify", "sent", "msgs"):
        with pytest.raises(InvalidInput) as err:
            decode_frame(json.dumps({"t": kind}), max_bytes=1024)
        assert err.value.code == "unknown_type" and err.value.field == "t"


def test_oversized_frame_is_too_large() -> None:
    with pytest.raises(TooLarge):
        decode_frame(json.dumps({"t": "ping", "pad": "x" * 200}), max_bytes=100)


def test_deep_nesting_is_refused() -> None:
    nested: dict = {"t": "ping"}
    cursor = nested
    for _ in range(20):
        cursor["x"] = {}
        cursor = cursor["x"]
    with pytest.raises(InvalidInput):
        decode_frame(json.dumps(nested), max_bytes=1 << 20)


def test_json_and_msgpack_decode_to_the_same_frame() -> None:
    frame = {"t": "send", "to": "bob", "body": "héllo", "client_msg_id": "1", "rid": 7}
    assert decode_frame(json.dumps(frame), max_bytes=1024) == frame
    assert decode_frame(msgpack.packb(frame), max_bytes=1024) == frame
    assert msgpack.unpackb(encode_frame(frame, binary=True)) == frame
    assert json.loads(encode_frame(frame, binary=False)) == frame


@pytest.mark.parametrize(("frame", "field"), [
    ({"body": "x", "client_msg_id": "1"}, "to"),
    ({"to": "bob", "client_msg_id": "1"}, "body"),
    ({"to": "bob", "body": "x"}, "client_msg_id"),
    ({"to": "Bob", "body": "x", "client_msg_id": "1"}, "to"),
    ({"to": "bob", "body": 5, "client_msg_id": "1"}, "body"),
    ({"to": "bob", "body": "", "client_msg_id": "1"}, "body"),
    ({"to": "bob", "body": "x", "client_msg_id": 1}, "client_msg_id"),
    ({"to": "bob", "body": "x" * 101, "client_msg_id": "1"}, "body"),
    ({"to": "bob", "body": "x", "client_msg_id": "1", "kind": "video"}, "kind"),
])
def test_send_fields_are_validated_by_name(frame: dict, field: str) -> None:
    with pytest.raises(InvalidInput) as err:
        parse_send(frame, max_text_chars=100)
    assert err.value.field == field


@pytest.mark.parametrize("value", [-1, "-3", 1.5, "1.5", "abc", True, None, [], "99999999999999999999"])
def test_seq_must_be_a_non_negative_integer(value: object) -> None:
    source = {} if value is None else {"after": value}
    if value is None:
        assert parse_pull(source, default_limit=10, max_limit=20) == (0, 10)
        return
    with pytest.raises(InvalidInput) as err:
        read_int(source, "after", default=0)
    assert err.value.field == "after"


def test_pull_limit_is_bounded() -> None:
    assert parse_pull({"after": "4", "limit": "20"}, default_limit=10, max_limit=20) == (4, 20)
    with pytest.raises(InvalidInput) as err:
        parse_pull({"limit": 21}, default_limit=10, max_limit=20)
    assert err.value.field == "limit"
    with pytest.raises(InvalidInput):
        parse_pull({"limit": 0}, default_limit=10, max_limit=20)


def test_json_body_must_be_an_object_within_limit() -> None:
    assert decode_json_body(b'{"a": 1}', max_bytes=100) == {"a": 1}
    for body in (b"", b"[]", b"{", b"\xff\xfe"):
        with pytest.raises(InvalidInput):
            decode_json_body(body, max_bytes=100)
    with pytest.raises(TooLarge):
        decode_json_body(b'{"a": "' + b"x" * 200 + b'"}', max_bytes=100)
