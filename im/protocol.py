"""Wire schema shared by the three transports: frame codec and field validation.

WebSocket text frames are JSON objects and binary frames msgpack maps with the same schema; HTTP
bodies are JSON objects validated by the same field readers, so a field is checked identically
whichever way it arrives. Every error names the offending field.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgpack

from im.errors import InvalidInput, TooLarge

__all__ = [
    "CLIENT_FRAME_TYPES",
    "MAX_CLIENT_MSG_ID_CHARS",
    "USER_ID_PATTERN",
    "SendRequest",
    "check_frame",
    "decode_frame",
    "decode_json_body",
    "encode_frame",
    "frame_rid",
    "load_frame",
    "parse_ack",
    "parse_pull",
    "parse_read",
    "parse_send",
    "read_bool",
    "read_device",
    "read_group_id",
    "read_int",
    "read_str",
    "read_user_id",
    "read_user_list",
]

# Frame types a client may send. Server-only types (sent, notify, msgs, receipt, error, pong...)
# are refused when a client sends them, so a confused client hears about it instead of being ignored.
CLIENT_FRAME_TYPES = frozenset({"auth", "send", "pull", "ack", "ping", "read"})

# Lower-case only so "Alice" and "alice" can never be two accounts; no ":" because user ids are
# embedded in conversation ids ("d:alice:bob").
USER_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,31}$")
DEVICE_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")
MSG_ID_PATTERN = re.compile(r"^[0-9a-f]{24}$")
MAX_CLIENT_MSG_ID_CHARS = 64
# JSON and msgpack both allow arbitrarily deep nesting; no valid frame is deeper than this.
MAX_NESTING_DEPTH = 8
# Longest request id echoed back; it is for correlation only.
MAX_RID_CHARS = 64


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of ``value``, stopping early once it exceeds ``limit``."""
    stack = [(value, 1)]
    deepest = 0
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if deepest > limit:
            return deepest
        if isinstance(item, Mapping):
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list | tuple):
            stack.extend((v, level + 1) for v in item)
    return deepest


def _check_object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidInput(f"{what} must be an object", code="bad_frame" if what == "frame" else "bad_json")
    if any(not isinstance(k, str) for k in value):
        raise InvalidInput(f"{what} keys must be strings", code="bad_frame")
    if _depth(value, MAX_NESTING_DEPTH) > MAX_NESTING_DEPTH:
        raise InvalidInput(f"{what} is nested too deeply", code="bad_frame")
    return value


def decode_frame(data: str | bytes, *, max_bytes: int) -> dict[str, Any]:
    """Decode one WebSocket frame: ``str`` is JSON, ``bytes`` is msgpack. Raises :class:`InvalidInput`."""
    return check_frame(load_frame(data, max_bytes=max_bytes))


def load_frame(data: str | bytes, *, max_bytes: int) -> dict[str, Any]:
    """A frame's object, not yet checked (:func:`check_frame`): its ``rid`` can then answer an error."""
    if len(data) > max_bytes:
        raise TooLarge(f"frame is larger than {max_bytes} bytes", code="frame_too_large")
    try:
        if isinstance(data, bytes):
            value = msgpack.unpackb(data, raw=False, strict_map_key=True, timestamp=0)
        else:
            value = json.loads(data)
    except (ValueError, TypeError, RecursionError, msgpack.ExtraData, msgpack.FormatError,
            msgpack.StackError):
        kind = "msgpack" if isinstance(data, bytes) else "JSON"
        raise InvalidInput(f"frame is not valid {kind}", code="bad_frame") from None
    return _check_object(value, "frame")


def frame_rid(frame: Mapping[str, Any]) -> str | int | None:
    """The frame's request id when it is a valid one (a short string or an integer), else None."""
    rid = frame.get("rid")
    if (isinstance(rid, str) and len(rid) <= MAX_RID_CHARS) or (
            isinstance(rid, int) and not isinstance(rid, bool) and abs(rid) < 2**53):
        return rid
    return None


def check_frame(frame: dict[str, Any]) -> dict[str, Any]:
    """Refuse a frame without a known type or with an invalid ``rid``."""
    kind = frame.get("t")
    if not isinstance(kind, str):
        raise InvalidInput("frame has no string 't' (frame type)", code="bad_frame", field="t")
    if kind not in CLIENT_FRAME_TYPES:
        raise InvalidInput(f"unknown frame type {kind[:32]!r}", code="unknown_type", field="t")
    if frame.get("rid") is not None and frame_rid(frame) is None:
        raise InvalidInput("rid must be a short string or an integer", field="rid")
    return frame


def encode_frame(frame: Mapping[str, Any], *, binary: bool) -> str | bytes:
    """Encode a server frame as msgpack (binary) or compact JSON (text)."""
    if binary:
        return msgpack.packb(frame, use_bin_type=True)
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False)


def decode_json_body(body: bytes, *, max_bytes: int) -> dict[str, Any]:
    """Decode an HTTP JSON request body into an object."""
    if len(body) > max_bytes:
        raise TooLarge(f"request body is larger than {max_bytes} bytes", code="body_too_large")
    if not body:
        raise InvalidInput("request body is empty; a JSON object is expected", code="bad_json")
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        raise InvalidInput("request body is not valid JSON", code="bad_json") from None
    return _check_object(value, "body")


# -- field readers: one place decides what a valid field is ------------------------------------------

_MISSING = object()


def read_int(
    source: Mapping[str, Any], name: str, *, default: int | None = None, minimum: int = 0,
    maximum: int = 2**53,
) -> int:
    """An integer field in [minimum, maximum]. Query strings arrive as text and are parsed here."""
    value = source.get(name, _MISSING)
    if value is _MISSING or value is None:
        if default is None:
            raise InvalidInput(f"{name} is required", field=name)
        return default
    if isinstance(value, str):
        text = value.strip()
        if not re.fullmatch(r"-?\d{1,16}", text):
            raise InvalidInput(f"{name} must be an integer", field=name)
        value = int(text)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{name} must be an integer", field=name)
    if value < minimum:
        raise InvalidInput(f"{name} must be >= {minimum}", field=name)
    if value > maximum:
        raise InvalidInput(f"{name} must be <= {maximum}", field=name)
    return value


def read_str(
    source: Mapping[str, Any], name: str, *, max_chars: int, default: str | None = None,
    min_chars: int = 1, pattern: re.Pattern[str] | None = None, pattern_help: str = "",
) -> str:
    value = source.get(name, _MISSING)
    if value is _MISSING or value is None:
        if default is None:
            raise InvalidInput(f"{name} is required", field=name)
        return default
    if not isinstance(value, str):
        raise InvalidInput(f"{name} must be a string", field=name)
    if len(value) > max_chars:
        raise TooLarge(f"{name} is longer than {max_chars} characters", field=name)
    if len(value) < min_chars:
        raise InvalidInput(f"{name} must have at least {min_chars} character(s)", field=name)
    if pattern is not None and not pattern.fullmatch(value):
        raise InvalidInput(f"{name} {pattern_help}", field=name)
    return value


def read_bool(source: Mapping[str, Any], name: str, *, default: bool) -> bool:
    value = source.get(name, _MISSING)
    if value is _MISSING or value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("1", "true", "0", "false"):
        return value.lower() in ("1", "true")
    raise InvalidInput(f"{name} must be a boolean", field=name)


def read_user_id(source: Mapping[str, Any], name: str) -> str:
    return read_str(
        source, name, max_chars=32, pattern=USER_ID_PATTERN,
        pattern_help="must be 1-32 characters of a-z, 0-9, '_', '.', '-', starting with a letter or digit",
    )


def read_device(source: Mapping[str, Any], name: str = "device") -> str:
    return read_str(
        source, name, max_chars=32, default="default", pattern=DEVICE_PATTERN,
        pattern_help="must be 1-32 characters of A-Z, a-z, 0-9, '_', '.', '-'",
    )


# -- requests shared by WebSocket frames and HTTP bodies ---------------------------------------------

# Kinds a client may send; "receipt" entries are written by the server only. A "file" message's body
# is the id of a file uploaded for the same conversation (POST /api/v1/files).
MESSAGE_KINDS = frozenset({"text", "file"})
GROUP_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# Message ids one read frame / request may name.
MAX_READ_IDS = 500
FILE_ID_CHARS = 24
# Members named in one group call.
MAX_USERS_PER_CALL = 500


@dataclass(frozen=True, slots=True)
class SendRequest:
    """A send to a user (``to``) or, with ``group`` set (and ``to`` empty), to a group."""

    to: str
    body: str
    client_msg_id: str
    kind: str = "text"
    group: str = ""


def parse_send(source: Mapping[str, Any], *, max_text_chars: int) -> SendRequest:
    kind = read_str(source, "kind", max_chars=16, default="text")
    if kind not in MESSAGE_KINDS:
        raise InvalidInput(f"kind must be one of {sorted(MESSAGE_KINDS)}", field="kind")
    group = read_group_id(source, "group") if source.get("group") is not None else ""
    if group and source.get("to") is not None:
        raise InvalidInput("name either 'to' (a user) or 'group', not both", field="group")
    body = read_str(source, "body", max_chars=FILE_ID_CHARS if kind == "file" else max_text_chars)
    if not body.strip():
        raise InvalidInput("body must not be empty or only whitespace", code="empty_body", field="body")
    return SendRequest(
        to="" if group else read_user_id(source, "to"),
        body=body,
        client_msg_id=read_str(source, "client_msg_id", max_chars=MAX_CLIENT_MSG_ID_CHARS),
        kind=kind,
        group=group,
    )


def parse_send_batch(source: Mapping[str, Any], *, max_items: int, max_text_chars: int
                     ) -> list[SendRequest | InvalidInput]:
    """The ``messages`` of a batch send, each parsed on its own: a malformed item is its own error
    in the answer, and the others are still sent."""
    items = _read_list(source, "messages", max_items=max_items)
    if not items:
        raise InvalidInput("messages must hold at least one message", field="messages")
    parsed: list[SendRequest | InvalidInput] = []
    for index, item in enumerate(items):
        try:
            message = _check_object(item, f"messages[{index}]")
            parsed.append(parse_send(message, max_text_chars=max_text_chars))
        except InvalidInput as exc:
            parsed.append(exc)
    return parsed


def read_group_id(source: Mapping[str, Any], name: str = "group") -> str:
    return read_str(source, name, max_chars=64, pattern=GROUP_ID_PATTERN,
                    pattern_help="must be a group id (1-64 characters of A-Z, a-z, 0-9, '_', '-')")


def _read_list(source: Mapping[str, Any], name: str, *, max_items: int) -> list[Any]:
    value = source.get(name)
    if value is None:
        raise InvalidInput(f"{name} is required", field=name)
    if not isinstance(value, list):
        raise InvalidInput(f"{name} must be a list", field=name)
    if len(value) > max_items:
        raise TooLarge(f"{name} has more than {max_items} items", field=name)
    return value


def read_user_list(source: Mapping[str, Any], name: str, *, allow_empty: bool = False) -> list[str]:
    """A list of user ids (duplicates dropped, order kept)."""
    items = _read_list(source, name, max_items=MAX_USERS_PER_CALL)
    if not items and not allow_empty:
        raise InvalidInput(f"{name} must name at least one user", field=name)
    users = [read_user_id({name: item}, name) for item in items]
    return list(dict.fromkeys(users))


def parse_read(source: Mapping[str, Any]) -> list[str]:
    """The ``msg_ids`` of a read frame or request: 1..MAX_READ_IDS message ids (24 hex digits)."""
    items = _read_list(source, "msg_ids", max_items=MAX_READ_IDS)
    if not items:
        raise InvalidInput("msg_ids must name at least one message", field="msg_ids")
    ids = [read_str({"msg_ids": item}, "msg_ids", max_chars=24, min_chars=24, pattern=MSG_ID_PATTERN,
                    pattern_help="must hold message ids (24 hex digits)") for item in items]
    return list(dict.fromkeys(ids))


def parse_pull(source: Mapping[str, Any], *, default_limit: int, max_limit: int) -> tuple[int, int]:
    """``(after, limit)`` of a pull."""
    after = read_int(source, "after", default=0)
    limit = read_int(source, "limit", default=default_limit, minimum=1, maximum=max_limit)
    return after, limit


def parse_ack(source: Mapping[str, Any]) -> int:
    return read_int(source, "upto")
