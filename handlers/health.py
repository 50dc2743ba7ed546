"""Liveness and readiness: ``GET /healthz`` answers 200 when the store answers, 503 otherwise."""

from __future__ import annotations

from handlers.base import ApiHandler

__all__ = ["HealthHandler"]


class HealthHandler(ApiHandler):
    async def get(self) -> None:
        checks = await self.service.health()
        healthy = all(value == "ok" for value in checks.values())
        self.reply({"status": "ok" if healthy else "degraded", "checks": checks},
                   status=200 if healthy else 503)
