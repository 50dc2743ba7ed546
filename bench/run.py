"""Run the whole benchmark and write ``bench/results/REPORT.md`` with PNG plots.

    .venv/bin/python -m bench.run            # the full run (~5 minutes on 2 cores)
    .venv/bin/python -m bench.run --quick    # the smallest sizes (a smoke run, ~1 minute)

One fresh SecantusDB (the embedded store, ``im/storage/embedded.py``) serves the whole run: the raw insert
baseline measures it, then the server under test (``python server.py``, its own process) uses it.
The baselines' servers (bare Tornado, python-socketio) and the load generators are processes of their
own; only one server is up at a time, so no measurement competes with another, except in the last part
(``bench/cluster.py``), which measures one node against a local 2-node cluster (two servers and a Redis).

    .venv/bin/python -m bench.run --skip baselines,ours,profile,idle,storm,rest   # the scale-out part only
    .venv/bin/python -m bench.run --skip baselines,ours,group,profile,idle,storm,cluster   # the REST part
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import secrets
import shutil
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from bench import cluster, profile, report, rest
from bench.accounts import create_users, mint_tokens
from bench.idle import measure_idle, server_metrics
from bench.procs import (
    REPO_ROOT,
    Proc,
    client_connections,
    cpu_secs,
    fd_count,
    python_module,
    raise_nofile_limit,
    rss_kb,
    run_json,
    wait_for_port,
)
from im.ops import eventloop
from im.storage.embedded import EmbeddedMongo, free_port

__all__ = ["main"]

log = logging.getLogger("bench.run")

DEFAULT_OUT_DIR = REPO_ROOT / "bench" / "results"
BENCH_DB = "im_bench"
# Load generator processes get this long on top of what their scenario should take.
LOADGEN_SLACK_SECS = 240.0
# Every SDK client of ours here is one device; idle connections share users (see --idle-users).
WS_SHARE = 2 / 3  # in chat and storm: 2 of 3 clients on WebSocket, the rest on long-poll


@dataclass
class Sizes:
    chat_pairs: int
    rates: list[float]
    step_secs: float
    drain_secs: float
    group_size: int
    group_senders: int
    group_rate: float
    group_secs: float
    idle_ws: int
    idle_lp: int
    idle_users: int
    idle_hold_secs: float
    idle_poll_secs: int
    storm_clients: int
    storm_backlog: int
    store_secs: float
    profile_secs: float
    profile_rate: float
    settle_secs: float
    # The scale-out part (bench/cluster.py): closed-loop 1:1 pairs, then a group on two nodes.
    cluster_pairs: int
    cluster_messages: int
    cluster_group_size: int
    cluster_group_senders: int
    cluster_group_rate: float
    cluster_group_secs: float
    cluster_drain_secs: float
    # The REST part (bench/rest.py): REST senders next to SDK senders on one node, and bare Tornado.
    rest_senders: int
    rest_rates: list[float]
    rest_step_secs: float
    rest_drain_secs: float
    rest_messages: int
    rest_profile_secs: float


FULL = Sizes(
    chat_pairs=100,
    rates=[100, 250, 500, 1000, 2000, 4000],
    step_secs=6,
    drain_secs=8,
    group_size=200,
    group_senders=10,
    group_rate=5,
    group_secs=8,
    idle_ws=10_000,
    idle_lp=5_000,
    idle_users=500,
    idle_hold_secs=20,
    idle_poll_secs=120,
    storm_clients=1000,
    storm_backlog=5,
    store_secs=3,
    profile_secs=8,
    profile_rate=1000,
    settle_secs=2,
    cluster_pairs=20,
    cluster_messages=100,
    cluster_group_size=200,
    cluster_group_senders=10,
    cluster_group_rate=5,
    cluster_group_secs=20,
    cluster_drain_secs=30,
    rest_senders=20,
    rest_rates=[100, 300, 1000],
    rest_step_secs=5,
    rest_drain_secs=15,
    rest_messages=150,
    rest_profile_secs=6,
)
QUICK = Sizes(
    chat_pairs=4,
    rates=[20, 40],
    step_secs=1,
    drain_secs=5,
    group_size=6,
    group_senders=2,
    group_rate=4,
    group_secs=1,
    idle_ws=20,
    idle_lp=10,
    idle_users=5,
    idle_hold_secs=1,
    idle_poll_secs=120,
    storm_clients=12,
    storm_backlog=2,
    store_secs=0.3,
    profile_secs=1,
    profile_rate=20,
    settle_secs=0.3,
    cluster_pairs=3,
    cluster_messages=20,
    cluster_group_size=6,
    cluster_group_senders=2,
    cluster_group_rate=4,
    cluster_group_secs=1,
    cluster_drain_secs=20,
    rest_senders=3,
    rest_rates=[20, 40],
    rest_step_secs=1,
    rest_drain_secs=10,
    rest_messages=10,
    rest_profile_secs=1,
)


class Sampler:
    """Samples CPU and RSS of the running servers every ``interval`` s on a thread (for the plots)."""

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.pids: dict[str, int] = {}
        self.samples: list[dict[str, Any]] = []
        self.phase = "setup"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._started = time.monotonic()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _loop(self) -> None:
        last: dict[str, tuple[float, float]] = {}
        while not self._stop.wait(self.interval):
            now = time.monotonic()
            row: dict[str, Any] = {"t": now - self._started, "phase": self.phase}
            for name, pid in list(self.pids.items()):
                try:
                    cpu, rss = cpu_secs(pid), rss_kb(pid)
                except (OSError, RuntimeError):
                    continue
                prev = last.get(name)
                last[name] = (now, cpu)
                if prev is not None:
                    row[f"{name}_cpu"] = (cpu - prev[1]) / max(1e-9, now - prev[0])
                row[f"{name}_rss_kb"] = rss
            self.samples.append(row)


class Bench:
    def __init__(self, sizes: Sizes, args: argparse.Namespace) -> None:
        self.sizes = sizes
        self.args = args
        self.work = Path(tempfile.mkdtemp(prefix="im-bench-"))
        self.logs = self.work / "logs"
        self.logs.mkdir()
        self.results: dict[str, Any] = {
            "sizes": sizes.__dict__,
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "machine": _machine(),
        }
        self.sampler = Sampler()
        self.secret = secrets.token_hex(32)
        # Every server of the run, the cluster's nodes included, wraps the data keys of the shared
        # database with this one master key (a node refuses to start on keys wrapped by another).
        self.master_key = secrets.token_urlsafe(32)
        self.db = BENCH_DB
        self.store: EmbeddedMongo | None = None
        self.progress: tqdm | None = None
        self.skip = {p.strip() for p in args.skip.split(",") if p.strip()}
        self._timer: tuple[str, float] | None = None

    # -- plumbing -------------------------------------------------------------------------------------

    def step(self, label: str) -> None:
        """Name the part now running (progress bar, plot phases) and time it for the report's table
        of durations: the run has a wall-clock budget (~10 minutes), so each part's share is shown."""
        assert self.progress is not None
        self._close_timer()
        self.progress.set_description(label)
        self.sampler.phase = label
        self._timer = (label, time.monotonic())

    def _close_timer(self) -> None:
        if self._timer is not None:
            label, started = self._timer
            durations = self.results.setdefault("part_secs", {})
            durations[label] = durations.get(label, 0.0) + time.monotonic() - started
            self._timer = None

    def done(self) -> None:
        assert self.progress is not None
        self.progress.update(1)

    def part(self, name: str, measure: Callable[[], dict[str, Any]]) -> None:
        """Run one part; a failure is recorded in the report and the run goes on with the next part."""
        try:
            self.results[name] = measure()
        except Exception as exc:
            log.warning("part %s failed: %s", name, exc)
            self.results.setdefault("failures", {})[name] = f"{type(exc).__name__}: {exc}"[-3000:]

    def loadgen(self, name: str, spec: dict[str, Any], expected_secs: float) -> dict[str, Any]:
        return run_json(
            "bench.loadgen",
            spec,
            timeout_secs=expected_secs + LOADGEN_SLACK_SECS,
            log_dir=self.logs,
            name=name,
        )

    def _store_raw(self, name: str) -> dict[str, Any]:
        assert self.store is not None
        secs = self.sizes.store_secs
        return run_json("bench.store_raw", {"url": self.store.url, "secs": secs, "drop": False},
                        timeout_secs=secs * 4 + 120, log_dir=self.logs, name=name)

    def start_server(
        self, name: str, extra_env: dict[str, str] | None = None, *, sample_as: str = "server"
    ) -> tuple[Proc, str]:
        """``python server.py`` on a free port with this run's store, secret and limits off; the CPU
        sampler follows it as ``sample_as``."""
        assert self.store is not None
        port = free_port()
        env = {
            "IM_PORT": str(port),
            "IM_HOST": "127.0.0.1",
            "IM_MONGO_URL": self.store.url,
            "IM_MONGO_DB": BENCH_DB,
            "IM_DATA_DIR": str(self.work / "server"),
            "IM_JWT_SECRET": self.secret,
            "IM_MASTER_KEY": self.master_key,
            "IM_LOG_LEVEL": "WARNING",
            # One machine plays every user: the per-address and per-user abuse limits would measure
            # themselves, not the server.
            "IM_RATE_IP_PER_SEC": "0",
            "IM_RATE_DEVICE_PER_SEC": "0",
            "IM_RATE_SEND_PER_SEC": "0",
            "IM_MAX_CONNECTIONS_PER_USER": "0",
            **(extra_env or {}),
        }
        proc = Proc(name, [sys.executable, "server.py"], log_dir=self.logs, env=env)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_for_port(port, proc.popen)
            _wait_healthy(url)
        except Exception:
            proc.stop()
            raise RuntimeError(f"server did not start:\n{proc.log_tail()}") from None
        self.sampler.pids[sample_as] = proc.pid
        return proc, url

    def start_baseline(self, module: str) -> tuple[Proc, str]:
        port = free_port()
        proc = Proc(module.rsplit(".", 1)[-1], python_module(module, "--port", str(port)), log_dir=self.logs)
        wait_for_port(port, proc.popen)
        self.sampler.pids["server"] = proc.pid
        return proc, f"http://127.0.0.1:{port}"

    # -- the run --------------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        s = self.sizes
        parts = 13 + rest.STEPS + cluster.STEPS
        with (
            ExitStack() as stack,
            tqdm(total=parts, unit="step", dynamic_ncols=True, disable=self.args.no_progress) as progress,
        ):
            self.progress = progress
            self.sampler.start()
            stack.callback(self.sampler.stop)
            self.step("store: starting SecantusDB")
            self.store = EmbeddedMongo(
                self.work / "mongo", log_path=self.logs / "secantus.log", sync_on_commit=True
            ).start()
            stack.callback(self.store.stop)
            self.sampler.pids["store"] = self.store.pid or 0
            self.done()

            self.step("baseline: raw store inserts")
            self.results["store_raw"] = {"SecantusDB": self._store_raw("store_raw")}
            if self.args.mongo_url:
                self.results["store_raw"]["mongod"] = run_json(
                    "bench.store_raw",
                    {"url": self.args.mongo_url, "secs": s.store_secs},
                    timeout_secs=s.store_secs * 4 + 120,
                    log_dir=self.logs,
                    name="store_raw_mongod",
                )
            self.done()

            for module, key in (("bench.bare_tornado", "tornado"), ("bench.sio_server", "sio")):
                if "baselines" in self.skip:
                    self.done()
                    self.done()
                    continue
                self.step(f"baseline: {key}")
                proc, url = self.start_baseline(module)
                try:
                    self.part(key, lambda key=key, url=url, pid=proc.pid: self._chat_and_group(
                        key, url, None, {"server": pid}))
                finally:
                    proc.stop()
                self.done()

            self.step("accounts")
            users = self._accounts()
            self.done()

            self.step("ours: 1:1 chat ladder")
            proc, url = self.start_server("server")
            try:
                if "ours" not in self.skip:
                    self.part("ours", lambda: self._chat_and_group("im", url, users, self._pids(proc)))
                else:
                    self.done()
                self.done()
                self.step("ours: profile")
                if "profile" not in self.skip:
                    self.part("profile", lambda: self._profile(proc, url, users))
                self.done()
            finally:
                proc.stop()

            # The same serial inserts once more, now that ours has run: the store's serial rate moves
            # within a run (more data in it, a noisy machine: 761 to 1,256 insert_one/s across runs of
            # one day), and the ratio moves with it.
            self.step("baseline: raw store inserts, again")
            self.results["store_raw_again"] = {"SecantusDB": self._store_raw("store_raw_again")}
            self.done()

            self.step("ours: idle connections")
            # Idle long-polls ask for a wait longer than the whole idle phase, so each parks once and
            # the figures are of parked polls, not of the 25 s re-poll cycle (5,000 / 25 s = 200
            # polls/s of churn, each a request, a token check and a pull).
            poll_max = max(self.sizes.idle_poll_secs, 60)
            proc, url = self.start_server("server-idle", {"IM_LONG_POLL_MAX_SECS": str(poll_max)})
            try:
                if "idle" not in self.skip:
                    self.part("idle", lambda: self._idle(proc, url, users))
                self.done()
                self.step("ours: reconnect storm")
                if "storm" not in self.skip:
                    self.part("storm", lambda: self._storm(proc, url, users))
                self.done()
            finally:
                proc.stop()

            # API callers: REST senders next to SDK senders on one node, then on bare Tornado.
            if "rest" not in self.skip:
                self.part("rest", lambda: rest.measure(self))
            else:
                progress.update(rest.STEPS)

            # One node, then a local 2-node cluster (a Redis and two servers on this store): the
            # same closed-loop job, and a group written from both nodes.
            if "cluster" not in self.skip:
                self.part("cluster", lambda: cluster.measure(self))
            else:
                progress.update(cluster.STEPS)
            self._close_timer()
        self.results["timeline"] = self.sampler.samples
        self.results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
        return self.results

    def _accounts(self) -> dict[str, list[dict[str, Any]]]:
        s = self.sizes
        assert self.store is not None
        chat = [f"c{i}" for i in range(s.chat_pairs * 2)]
        group = [f"g{i}" for i in range(s.group_size)]
        idle = [f"i{i}" for i in range(s.idle_users)]
        storm = [f"s{i}" for i in range(s.storm_clients)]
        seeders = [f"z{i}" for i in range(4)]
        asyncio.run(create_users(self.store.url, BENCH_DB, chat + group + idle + storm + seeders))

        def clients(
            names: list[str], *, transports: list[str], device: str = "bench"
        ) -> list[dict[str, Any]]:
            pairs = [(n, device) for n in names]
            return [
                {"user": n, "device": device, "token": t, "transport": tr}
                for n, t, tr in zip(names, mint_tokens(self.secret, pairs), transports, strict=True)
            ]

        def mixed(count: int) -> list[str]:
            # Every third client on long-poll, the rest on WebSocket.
            return ["longpoll" if i % 3 == 2 else "ws" for i in range(count)]

        idle_total = s.idle_ws + s.idle_lp
        idle_names = [idle[i % len(idle)] for i in range(idle_total)]
        idle_pairs = [(n, f"d{i}") for i, n in enumerate(idle_names)]
        idle_tokens = mint_tokens(self.secret, idle_pairs)
        idle_clients = [
            {"user": n, "device": d, "token": t, "transport": "ws" if i < s.idle_ws else "longpoll"}
            for i, ((n, d), t) in enumerate(zip(idle_pairs, idle_tokens, strict=True))
        ]
        return {
            "chat": clients(chat, transports=mixed(len(chat))),
            "group": clients(group, transports=mixed(len(group))),
            "idle": idle_clients,
            "storm": clients(storm, transports=mixed(len(storm))),
            "seeders": clients(seeders, transports=["ws"] * len(seeders), device="seed"),
        }

    def _pids(self, proc: Proc) -> dict[str, int]:
        """The processes whose CPU per delivered message the report gives: the server and the store."""
        assert self.store is not None and self.store.pid is not None
        return {"server": proc.pid, "store": self.store.pid}

    def _chat_and_group(
        self, target: str, url: str, users: dict[str, list[dict[str, Any]]] | None, pids: dict[str, int]
    ) -> dict[str, Any]:
        s = self.sizes
        if users is None:  # the baselines: no accounts, every client on a WebSocket
            chat_clients = [{"user": f"c{i}"} for i in range(s.chat_pairs * 2)]
            group_clients = [{"user": f"g{i}"} for i in range(s.group_size)]
        else:
            chat_clients, group_clients = users["chat"], users["group"]
        ladder_secs = len(s.rates) * (s.step_secs + s.drain_secs)
        assert self.store is not None
        store_url = self.store.url if target == "im" else None
        chat = self.loadgen(
            f"{target}-chat",
            {
                "scenario": "chat",
                "target": target,
                "url": url,
                "clients": chat_clients,
                "rates": s.rates,
                "step_secs": s.step_secs,
                "drain_secs": s.drain_secs,
                "store_url": store_url,
                # The latency targets are set at this rate: measured even past saturation.
                "must_reach": [report.P99_TARGET_RATE] if report.P99_TARGET_RATE in s.rates else [],
                "pids": pids,
            },
            ladder_secs,
        )
        self.done()
        if "group" in self.skip:
            return {"chat": chat}
        self.step(f"{target}: {s.group_size}-member group")
        if target == "im":
            self.wait_drained(url)
        mode = "group"
        group_name = "bench"
        if target == "im":
            group_name, mode = self.make_group(url, group_clients)
        group = self.loadgen(
            f"{target}-group",
            {
                "scenario": "group",
                "target": target,
                "url": url,
                "clients": group_clients,
                "group": group_name,
                "mode": mode,
                "senders": s.group_senders,
                "rate": s.group_rate,
                "secs": s.group_secs,
                "drain_secs": s.drain_secs * 2,
                "store_url": store_url,
                "pids": pids,
            },
            s.group_secs + s.drain_secs * 2,
        )
        return {"chat": chat, "group": group}

    def wait_drained(self, url: str, timeout_secs: float = 60.0) -> None:
        """Let the server write what a saturated ladder step left queued, so that the next scenario
        measures itself, not the previous one's backlog (the server's own ``im_write_queue`` gauge)."""
        deadline = time.monotonic() + timeout_secs
        while time.monotonic() < deadline:
            gauges = server_metrics(url)
            if gauges.get("send_queue", 0) == 0 and gauges.get("ack_queue", 0) == 0:
                return
            time.sleep(0.5)
        log.warning("the server still had writes queued after %.0f s; measuring anyway", timeout_secs)

    def make_group(self, url: str, members: list[dict[str, Any]]) -> tuple[str, str]:
        """Create the group through the group API; ("", "direct") when the server has none."""
        body = {"name": "bench", "members": [m["user"] for m in members]}
        try:
            reply = _http_json(url + "/api/v1/groups", body, token=members[0]["token"])
        except urllib.error.HTTPError as exc:
            if exc.code in (404, 405):
                return "", "direct"
            raise
        group_id = reply.get("id") or reply.get("group") or reply.get("_id")
        return (str(group_id), "group") if group_id else ("", "direct")

    def _profile(self, proc: Proc, url: str, users: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
        """py-spy on the server while the chat scenario runs at ``profile_rate``."""
        s = self.sizes
        out = self.work / "profile.txt"
        store_out = self.work / "profile-store.txt"
        recorded: dict[str, bool] = {}

        started_mark = self.work / "profile-step-started"
        started_mark.unlink(missing_ok=True)

        def sample(pid: int, path: Path, key: str) -> None:
            # Sample the measured step only, not the clients connecting and warming up: the load
            # generator touches the mark file when its step begins.
            deadline = time.monotonic() + LOADGEN_SLACK_SECS
            while not started_mark.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(0.5)
            recorded[key] = profile.record(pid, s.profile_secs, path)

        assert self.store is not None and self.store.pid is not None
        samplers = [
            threading.Thread(target=sample, args=(proc.pid, out, "server"), daemon=True),
            threading.Thread(target=sample, args=(self.store.pid, store_out, "store"), daemon=True),
        ]
        for sampler in samplers:
            sampler.start()
        load = self.loadgen(
            "im-profile",
            {
                "scenario": "chat",
                "target": "im",
                "url": url,
                "clients": users["chat"],
                "rates": [s.profile_rate],
                "step_secs": s.profile_secs + 1.5,
                # The profile needs the load, not its deliveries: this server stops right after.
                "drain_secs": 1.0,
                "store_url": self.store.url if self.store else None,
                "step_started_file": str(started_mark),
            },
            s.profile_secs + 60,
        )
        for sampler in samplers:
            sampler.join(s.profile_secs + 90)
        summary: dict[str, Any] = {"rate": s.profile_rate, "load": load["steps"][0] if load["steps"] else {}}
        if recorded.get("server"):
            summary.update(profile.summarize_folded(out.read_text(), secs=s.profile_secs))
        else:
            summary["error"] = "py-spy could not sample the server (missing, or no ptrace permission)"
        if recorded.get("store"):
            summary["store"] = profile.summarize_folded(store_out.read_text(), secs=s.profile_secs)
        return summary

    def _idle(self, proc: Proc, url: str, users: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
        port = int(url.rsplit(":", 1)[1])
        result = measure_idle(
            users["idle"],
            url=url,
            pid=proc.pid,
            port=port,
            log_dir=self.logs,
            settle_secs=self.sizes.settle_secs,
            hold_secs=self.sizes.idle_hold_secs,
            connect_timeout_secs=600,
            poll_timeout_secs=self.sizes.idle_poll_secs,
        )
        result["server_fds_at_end"] = fd_count(proc.pid)
        result["server_clients_at_end"] = client_connections(proc.pid, port)
        return result

    def _storm(self, proc: Proc, url: str, users: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
        s = self.sizes
        return self.loadgen(
            "im-storm",
            {
                "scenario": "storm",
                "target": "im",
                "url": url,
                "clients": users["storm"],
                "seeders": users["seeders"],
                "backlog": s.storm_backlog,
                "timeout_secs": 120,
                "pids": self._pids(proc),
            },
            240,
        )


def _wait_healthy(url: str, timeout_secs: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_secs
    while True:
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=5) as answer:
                if answer.status == 200:
                    return
        except (OSError, urllib.error.URLError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url}/healthz not 200 within {timeout_secs:.0f} s")
        time.sleep(0.2)


def _http_json(url: str, body: dict[str, Any], *, token: str) -> dict[str, Any]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read() or b"{}")


def _machine() -> dict[str, Any]:
    import platform

    return {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
            "event_loop": "uvloop" if eventloop.loop_factory() else "asyncio"}


def parse_args(argv: list[str] | None) -> tuple[Sizes, argparse.Namespace]:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the smallest sizes (smoke run)")
    parser.add_argument("--out", default=str(DEFAULT_OUT_DIR), help="where REPORT.md and the plots go")
    parser.add_argument(
        "--mongo-url",
        default=os.environ.get("IM_BENCH_MONGO_URL", ""),
        help="a real mongod for the raw insert baseline too [IM_BENCH_MONGO_URL]",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--keep-work", action="store_true", help="keep the work directory (logs, raw results)"
    )
    parser.add_argument(
        "--skip",
        default="",
        help="comma-separated parts to leave out: baselines, ours (its chat and group), group, "
        "profile, idle, storm, rest, cluster (the report then lacks their tables)",
    )
    parser.add_argument(
        "--profile-label", default="", help="also save the profile summary as profile-LABEL.json"
    )
    base = QUICK if "--quick" in (argv if argv is not None else sys.argv[1:]) else FULL
    for name, value in base.__dict__.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, list):
            parser.add_argument(flag, default=",".join(f"{v:g}" for v in value), help=f"default: {value}")
        else:
            parser.add_argument(flag, type=type(value), default=value, help=f"default: {value}")
    args = parser.parse_args(argv)
    values = {}
    for name, value in base.__dict__.items():
        raw = getattr(args, name)
        values[name] = [float(v) for v in raw.split(",") if v] if isinstance(value, list) else raw
    return Sizes(**values), args


def main(argv: list[str] | None = None) -> int:
    sizes, args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    raise_nofile_limit()
    bench = Bench(sizes, args)
    started = time.monotonic()
    try:
        results = bench.run()
    except BaseException:
        print(f"benchmark failed; logs are in {bench.logs}", file=sys.stderr)
        raise
    results["wall_secs"] = time.monotonic() - started
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report.write(results, out, profile_label=args.profile_label)
    if args.keep_work:
        (bench.work / "results.json").write_text(json.dumps(results, indent=1))
        print(f"raw results and logs: {bench.work}")
    else:
        shutil.rmtree(bench.work, ignore_errors=True)
    print(f"report: {out / 'REPORT.md'} ({results['wall_secs']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
