"""``GET /api/v1/openapi.yaml``: the OpenAPI 3 description of the HTTP API (``docs/openapi.yaml``)."""

from __future__ import annotations

from pathlib import Path

from handlers.base import ApiHandler

__all__ = ["OPENAPI_PATH", "OpenApiHandler"]

OPENAPI_PATH = Path(__file__).resolve().parent.parent / "docs" / "openapi.yaml"


class OpenApiHandler(ApiHandler):
    """Serves the spec file as written (read once, then cached with the handler class)."""

    _spec: bytes | None = None

    async def get(self) -> None:
        cls = type(self)
        if cls._spec is None:
            cls._spec = OPENAPI_PATH.read_bytes()
        self.set_header("Content-Type", "application/yaml; charset=utf-8")
        self.set_header("Cache-Control", "public, max-age=300")
        self.finish(cls._spec)
