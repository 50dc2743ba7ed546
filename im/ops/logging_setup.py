"""Log setup: plain text for people, or one JSON object per line for log pipelines, with a request id.

The request id travels in a context variable: the HTTP layer sets it when a request starts (from the
caller's ``X-Request-Id`` or a fresh one) and every record logged while serving that request carries
it, including the domain's, without the domain knowing about HTTP.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import uuid
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, TextIO

__all__ = ["REQUEST_ID", "JsonFormatter", "RequestIdFilter", "configure_logging", "request_id_from"]

REQUEST_ID: ContextVar[str] = ContextVar("request_id", default="")
# A caller's id is echoed into headers and logs: keep it short and free of anything that could
# forge a log line or a header.
_REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s%(request_id_suffix)s: %(message)s"
# Attributes every LogRecord has; anything else on a record came from `extra=` and is logged as a field.
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "request_id", "request_id_suffix", "taskName"}


def request_id_from(header: str | None) -> str:
    """The caller's ``X-Request-Id`` when it is a sane token, else a new random id."""
    if header and _REQUEST_ID_PATTERN.fullmatch(header):
        return header
    return uuid.uuid4().hex


class RequestIdFilter(logging.Filter):
    """Stamps each record with the current request id (empty outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        rid = getattr(record, "request_id", None) or REQUEST_ID.get()
        record.request_id = rid
        record.request_id_suffix = f" [{rid}]" if rid else ""
        return True


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg", "request_id"?, "exc"?, ...extra fields}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = getattr(record, "request_id", "")
        if rid:
            entry["request_id"] = rid
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure_logging(level: str, fmt: str = "text", stream: TextIO | None = None) -> None:
    """Replace the root handlers with one writing ``fmt`` ("text" or "json") to ``stream`` (stderr)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
