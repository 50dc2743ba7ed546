"""``GET /metrics`` (Prometheus text format) and the access log that also times every request."""

from __future__ import annotations

import logging
from collections.abc import Callable

import tornado.web
from prometheus_client import CONTENT_TYPE_LATEST

from handlers.base import ApiHandler
from im.ops.metrics import Metrics

__all__ = ["MetricsHandler", "access_logger"]

access_log = logging.getLogger("tornado.access")


class MetricsHandler(ApiHandler):
    """The node's metrics. Like ``/healthz`` it needs no token: expose it only to the monitoring
    network (a reverse proxy that does not forward ``/metrics``), as usual for Prometheus targets."""

    async def get(self) -> None:
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish(self.service.metrics.render())


def access_logger(metrics: Metrics) -> Callable[[tornado.web.RequestHandler], None]:
    """The application's ``log_function``: one access line per request with structured fields (for
    ``log_format=json``), and the request time in ``im_http_request_seconds``.

    Labels are the handler class and the status class, never the path, so their number stays bounded
    whatever URLs clients make up.
    """

    def log_request(handler: tornado.web.RequestHandler) -> None:
        status = handler.get_status()
        request = handler.request
        seconds = request.request_time()
        metrics.http_request_seconds.labels(type(handler).__name__, f"{status // 100}xx").observe(seconds)
        level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
        if not access_log.isEnabledFor(level):
            return
        rid = handler._headers.get("X-Request-Id", "")
        access_log.log(level, "%d %s %s (%s) %.2fms", status, request.method, request.uri, request.remote_ip,
                       seconds * 1000, extra={
                           "status": status, "method": request.method, "path": request.path,
                           "duration_ms": round(seconds * 1000, 2), "remote_ip": request.remote_ip,
                           **({"request_id": rid} if rid else {}),
                       })

    return log_request
