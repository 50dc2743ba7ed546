"""Entry point: ``python server.py [--flags]`` (or the ``im-server`` console script).

With no configuration it starts an embedded SecantusDB under ``./data`` and listens on
http://127.0.0.1:8888, serving the web client at ``/``. ``python server.py --help`` lists every setting.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys
from collections.abc import Sequence

import tornado.httpserver

from config import Settings, SettingsError, load_settings
from handlers.app import make_app
from handlers.base import hard_body_limit
from im.ops import eventloop
from im.ops.logging_setup import configure_logging
from im.runtime import Runtime

log = logging.getLogger("im.server")

# Time given to in-flight requests (long-polls end early) before connections are cut at shutdown.
SHUTDOWN_GRACE_SECS = 5.0
# Allocations between young-generation collections (CPython's default is 700): under load the default
# collects so often that the state of every request in flight (a send, a pull, a parked long-poll) is
# promoted and piles up in the old generation until a full pass; at this threshold what is in flight
# mostly dies young. The pauses before and after: docs/performance.md.
GC_YOUNG_THRESHOLD = 20_000


def build_http_server(runtime: Runtime) -> tornado.httpserver.HTTPServer:
    settings = runtime.settings
    return tornado.httpserver.HTTPServer(
        make_app(runtime.service, settings),
        max_body_size=hard_body_limit(settings),
        idle_connection_timeout=settings.long_poll_max_secs + 30,
        xheaders=settings.trust_forwarded_headers,
    )


async def serve(settings: Settings) -> None:
    runtime = await Runtime.start(settings)
    server = build_http_server(runtime)
    server.listen(settings.port, settings.host)
    # Everything allocated so far (modules, handlers, settings) lives as long as the process: kept out
    # of the collector's full passes, which otherwise walk it every time.
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
    log.info("listening on http://%s:%d (node %s, %s)", settings.host, settings.port,
             settings.effective_node_id, eventloop.loop_name())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down")
    server.stop()
    await runtime.service.quiesce(SHUTDOWN_GRACE_SECS)
    try:
        await asyncio.wait_for(server.close_all_connections(), SHUTDOWN_GRACE_SECS)
    except TimeoutError:
        log.warning("some connections were still open after %.0f s", SHUTDOWN_GRACE_SECS)
    await runtime.close()
    log.info("stopped")


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = load_settings(sys.argv[1:] if argv is None else argv)
    except SettingsError as exc:
        print(f"im-server: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    try:
        eventloop.run(serve(settings), settings.event_loop)
    except eventloop.LoopUnavailable as exc:
        print(f"im-server: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
