"""What one idle connection costs the server: RSS per parked WebSocket and per parked long-poll.

Why a script of its own: the full benchmark (``bench/run.py``, "Idle connections") needs 15,000 SDK
clients and ten minutes; this one answers the narrower question in a minute, with allocation detail.

Three processes, so the server's RSS is the server's only:

- this one (the driver): starts an embedded SecantusDB, creates the users, reads the server's VmRSS;
- ``serve``: the server (``server.serve``) with a SIGUSR1 hook that writes live-object counts by type
  and, under ``--trace``, a tracemalloc snapshot (tracing costs memory, so RSS runs go without it);
- ``clients``: holds N idle WebSockets (Tornado client: it answers the server's pings) and N parked
  long-polls (raw HTTP/1.1 on asyncio streams: the cheapest client that keeps a request open).

Phases: warm-up (a few of each open and close, so first-use allocations are in the baseline), then
all WebSockets, then all long-polls. Each phase's delta is divided by its connection count.

    .venv/bin/python scripts/conn_memory.py --ws 2000 --lp 2000
    .venv/bin/python scripts/conn_memory.py --ws 2000 --lp 2000 --trace 25   # where it goes
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import gc
import json
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
import urllib.request
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from bench.accounts import create_users, mint_tokens  # noqa: E402
from bench.procs import client_connections, cpu_secs, raise_nofile_limit, rss_kb  # noqa: E402

JWT_SECRET = "conn-memory-secret-" + "x" * 40
# Polls ask for this long a wait; the server's maximum is raised to match so nothing answers mid-run.
PARK_SECS = 3000
# Connects in flight at once: enough to be quick, few enough not to grow the store pool much.
CONNECT_CONCURRENCY = 50
WARMUP_CONNECTIONS = 100
SETTLE_SECS = 3.0
# --lp-cycle: the SDK's poll timeout (imclient POLL_TIMEOUT_SECS), and how many cycles to hold.
LP_CYCLE_SECS = 25
LP_CYCLES = 3
TOP_ALLOCATIONS = 25


# -- server side ------------------------------------------------------------------------------------


def _dump(directory: Path) -> None:
    """SIGUSR1: write object counts by type (and a tracemalloc snapshot when tracing) for the driver."""
    gc.collect()
    counts = collections.Counter(type(o).__qualname__ for o in gc.get_objects())
    index = len(list(directory.glob("types-*.json")))
    (directory / f"types-{index}.json").write_text(json.dumps(counts))
    if tracemalloc.is_tracing():
        with open(directory / f"snap-{index}.pickle", "wb") as out:
            pickle.dump(tracemalloc.take_snapshot(), out)
    (directory / f"done-{index}").touch()


def serve(dump_dir: Path, trace_frames: int) -> None:
    """Run the real server (settings from ``IM_*``) with the dump hook installed."""
    from config import load_settings
    from im.ops.logging_setup import configure_logging
    from server import serve as run_server

    if trace_frames:
        tracemalloc.start(trace_frames)
    settings = load_settings([])
    configure_logging(settings.log_level, settings.log_format)

    async def main() -> None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, _dump, dump_dir)
        await run_server(settings)

    asyncio.run(main())


# -- client side ------------------------------------------------------------------------------------


async def _open_ws(port: int, token: str) -> Any:
    import tornado.httpclient
    import tornado.websocket

    request = tornado.httpclient.HTTPRequest(f"ws://127.0.0.1:{port}/ws",
                                             headers={"Authorization": f"Bearer {token}"})
    conn = await tornado.websocket.websocket_connect(request)
    conn.write_message('{"t":"ping"}')  # answered only after open() registered the socket
    reply = await conn.read_message()
    if reply is None or '"pong"' not in str(reply):
        raise RuntimeError(f"unexpected first frame {reply!r}")
    return conn


async def _open_lp(port: int, token: str) -> asyncio.StreamWriter:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write((f"GET /api/v1/poll?after=0&timeout={PARK_SECS} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                  f"Authorization: Bearer {token}\r\n\r\n").encode())
    await writer.drain()
    writer.reader = reader  # type: ignore[attr-defined]  # kept alive with its writer
    return writer


async def _cycle_lp(port: int, token: str, timeout_secs: int, started: asyncio.Future[None]) -> None:
    """Poll like the SDK does: a new connection per poll (``Connection: close``), the first poll
    without waiting, then ``timeout_secs`` waits back to back (the connection churn of a real fleet)."""
    wait = 0
    while True:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write((f"GET /api/v1/poll?after=0&timeout={wait} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                          f"Authorization: Bearer {token}\r\nAccept: application/json\r\n"
                          "Connection: close\r\n\r\n").encode())
            if wait and not started.done():
                started.set_result(None)
            await reader.read()
        finally:
            writer.close()
        wait = timeout_secs


async def _open_cycling(port: int, token: str) -> asyncio.Task[None]:
    started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(_cycle_lp(port, token, LP_CYCLE_SECS, started))
    await started
    return task


async def _open_many(opener: Any, port: int, tokens: list[str]) -> list[Any]:
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def one(token: str) -> Any:
        async with gate:
            return await opener(port, token)

    return list(await asyncio.gather(*(one(t) for t in tokens)))


def _close_all(held: list[Any]) -> None:
    for conn in held:
        conn.cancel() if isinstance(conn, asyncio.Task) else conn.close()
    held.clear()


async def clients(port: int, tokens: dict[str, list[str]]) -> None:
    """Obey one command per stdin line (``ws``, ``lp``, ``close``, ``warm``), answering ``ok``."""
    held: list[Any] = []
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := (await reader.readline()).decode().strip():
        if line == "warm":
            held += await _open_many(_open_ws, port, tokens["warm_ws"])
            held += await _open_many(_open_lp, port, tokens["warm_lp"])
        elif line == "ws":
            held += await _open_many(_open_ws, port, tokens["ws"])
        elif line == "lp":
            held += await _open_many(_open_lp, port, tokens["lp"])
        elif line == "lp-cycle":
            held += await _open_many(_open_cycling, port, tokens["lp"])
        elif line == "close":
            _close_all(held)
        print("ok", flush=True)


# -- driver -----------------------------------------------------------------------------------------


def _metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def _wait_until(check: Any, timeout_secs: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_secs
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError("timed out waiting for the server")
        time.sleep(0.2)


def _wait_quiet(pid: int, timeout_secs: float = 120.0) -> None:
    """Wait until the server is idle (under 10% of a core for a second): every connect was served,
    so what remains is what an idle connection holds (a waiter count rises before the first pull)."""
    deadline = time.monotonic() + timeout_secs
    while time.monotonic() < deadline:
        used = cpu_secs(pid)
        time.sleep(1.0)
        if cpu_secs(pid) - used < 0.1:
            return
    print(f"warning: the server was still busy after {timeout_secs:.0f} s; reading anyway", file=sys.stderr)


class Driver:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.dump_dir = workdir / "dumps"
        self.dump_dir.mkdir()
        self.dumps = 0

    def reading(self, label: str, *, quiet: bool = True) -> dict[str, Any]:
        pid, port = self.server.pid, self.port
        time.sleep(SETTLE_SECS)
        if quiet:
            _wait_quiet(pid)
        result = {"phase": label, "rss_kb": rss_kb(pid), "clients": client_connections(pid, port),
                  "waiters": _metric(port, "im_long_poll_waiters")}
        os.kill(pid, signal.SIGUSR1)
        _wait_until(lambda: (self.dump_dir / f"done-{self.dumps}").exists())
        result["dump"] = self.dumps
        self.dumps += 1
        print(json.dumps({k: v for k, v in result.items() if k != "dump"}), flush=True)
        return result

    def command(self, command: str) -> None:
        assert self.client_proc.stdin is not None and self.client_proc.stdout is not None
        self.client_proc.stdin.write(command + "\n")
        self.client_proc.stdin.flush()
        if self.client_proc.stdout.readline().strip() != "ok":
            raise RuntimeError(f"clients failed on {command!r}; see {self.workdir}/clients.log")

    def run(self) -> None:
        from im.storage.embedded import EmbeddedMongo, free_port

        args = self.args
        raise_nofile_limit()
        mongo = EmbeddedMongo(self.workdir / "db", log_path=self.workdir / "secantus.log",
                              sync_on_commit=False).start()
        try:
            names = {"warm_ws": [f"warmws{i}" for i in range(WARMUP_CONNECTIONS)],
                     "warm_lp": [f"warmlp{i}" for i in range(WARMUP_CONNECTIONS)],
                     "ws": [f"ws{i}" for i in range(args.ws)], "lp": [f"lp{i}" for i in range(args.lp)]}
            asyncio.run(create_users(mongo.url, "im", [u for users in names.values() for u in users]))
            tokens = {kind: mint_tokens(JWT_SECRET, [(u, "d") for u in users])
                      for kind, users in names.items()}
            (self.workdir / "tokens.json").write_text(json.dumps(tokens))
            self.port = free_port()
            env = {**os.environ, "IM_MONGO_URL": mongo.url, "IM_JWT_SECRET": JWT_SECRET,
                   "IM_PORT": str(self.port), "IM_DATA_DIR": str(self.workdir), "IM_WRITE_CONCERN": "1",
                   "IM_RATE_IP_PER_SEC": "0", "IM_RATE_DEVICE_PER_SEC": "0",
                   "IM_LONG_POLL_MAX_SECS": str(PARK_SECS),
                   "IM_LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1"}
            script = str(Path(__file__).resolve())
            with open(self.workdir / "server.log", "wb") as log:
                self.server = subprocess.Popen(
                    [sys.executable, script, "serve", str(self.dump_dir), str(args.trace)],
                    env=env, stdout=log, stderr=log, cwd=REPO_ROOT)
            try:
                _wait_until(lambda: _port_answers(self.port), timeout_secs=60)
                with open(self.workdir / "clients.log", "wb") as log:
                    self.client_proc = subprocess.Popen(
                        [sys.executable, script, "clients", str(self.port),
                         str(self.workdir / "tokens.json")],
                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, cwd=REPO_ROOT)
                try:
                    self.phases()
                finally:
                    assert self.client_proc.stdin is not None
                    self.client_proc.stdin.close()
                    self.client_proc.wait(30)
            finally:
                self.server.send_signal(signal.SIGTERM)
                try:
                    self.server.wait(30)
                except subprocess.TimeoutExpired:
                    self.server.kill()
        finally:
            mongo.stop()

    def phases(self) -> None:
        args = self.args
        self.command("warm")
        _wait_until(lambda: _metric(self.port, "im_long_poll_waiters") >= WARMUP_CONNECTIONS)
        self.command("close")
        _wait_until(lambda: client_connections(self.server.pid, self.port) == 0)
        base = self.reading("baseline (after warm-up)")
        self.command("ws")
        with_ws = self.reading(f"+{args.ws} WebSocket")
        if args.lp_cycle:
            self.command("lp-cycle")
            time.sleep(LP_CYCLE_SECS * LP_CYCLES)
        else:
            self.command("lp")
            _wait_until(lambda: _metric(self.port, "im_long_poll_waiters") >= args.lp)
        with_all = self.reading(f"+{args.lp} long-poll", quiet=not args.lp_cycle)
        ws_kb = (with_ws["rss_kb"] - base["rss_kb"]) / max(1, args.ws)
        lp_kb = (with_all["rss_kb"] - with_ws["rss_kb"]) / max(1, args.lp)
        all_kb = (with_all["rss_kb"] - base["rss_kb"]) / max(1, args.ws + args.lp)
        print(json.dumps({"ws_kb_per_conn": round(ws_kb, 2), "lp_kb_per_conn": round(lp_kb, 2),
                          "all_kb_per_conn": round(all_kb, 2), "traced": bool(args.trace)}), flush=True)
        self.report_types(base, with_ws, "WebSocket", args.ws)
        self.report_types(with_ws, with_all, "long-poll", args.lp)
        if args.trace:
            self.report_trace(base, with_ws, "WebSocket", args.ws)
            self.report_trace(with_ws, with_all, "long-poll", args.lp)
        self.command("close")

    def report_types(self, before: dict[str, Any], after: dict[str, Any], what: str, count: int) -> None:
        old = json.loads((self.dump_dir / f"types-{before['dump']}.json").read_text())
        new = json.loads((self.dump_dir / f"types-{after['dump']}.json").read_text())
        grown = sorted(((new[k] - old.get(k, 0), k) for k in new), reverse=True)
        print(f"\nlive objects per {what} (gc-tracked, grown by >= 0.5 per connection):")
        for delta, name in grown:
            if delta < count / 2:
                break
            print(f"  {delta / count:6.2f}  {name}")

    def report_trace(self, before: dict[str, Any], after: dict[str, Any], what: str, count: int) -> None:
        def load(reading: dict[str, Any]) -> tracemalloc.Snapshot:
            with open(self.dump_dir / f"snap-{reading['dump']}.pickle", "rb") as snap:
                return pickle.load(snap)

        old, new = load(before), load(after)
        for key in ("filename", "lineno", "traceback"):
            stats = new.compare_to(old, key)
            total = sum(s.size_diff for s in stats)
            print(f"\ntracemalloc per {what}, by {key}: {total / count / 1024:.2f} KB traced in all")
            for stat in stats[:TOP_ALLOCATIONS]:
                if stat.size_diff <= 0:
                    break
                frames = stat.traceback.format(limit=self.args.frames if key == "traceback" else 1)
                where = "\n        ".join(line.strip() for line in frames if line.strip())
                print(f"  {stat.size_diff / count:8.0f} B  {stat.count_diff / count:5.2f} blocks  {where}")


def _port_answers(port: int) -> bool:
    with contextlib.suppress(OSError), urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
        return True
    return False


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        serve(Path(sys.argv[2]), int(sys.argv[3]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "clients":
        raise_nofile_limit()
        asyncio.run(clients(int(sys.argv[2]), json.loads(Path(sys.argv[3]).read_text())))
        return
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ws", type=int, default=2000, help="idle WebSockets to open")
    parser.add_argument("--lp", type=int, default=2000, help="parked long-polls to open")
    parser.add_argument("--trace", type=int, default=0, metavar="FRAMES",
                        help="trace allocations with this many frames (0: off; RSS is then inflated)")
    parser.add_argument("--lp-cycle", action="store_true",
                        help=f"long-polls poll as the SDK does (new connection per {LP_CYCLE_SECS} s poll) "
                             f"for {LP_CYCLES} cycles instead of parking one request")
    parser.add_argument("--frames", type=int, default=6, help="frames shown per traceback")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, dumps)")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="conn-memory-"))
    Driver(args, workdir).run()
    if not args.keep:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"work directory: {workdir}")


if __name__ == "__main__":
    main()
