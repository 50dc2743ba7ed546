"""The scale-out part of the benchmark: one job on one node, then on a local 2-node cluster.

The job (``bench/closedloop.py``): ``cluster_pairs`` senders each POST ``cluster_messages`` one-to-one
messages over REST, the next as soon as the previous one's receipt came back (closed loop); each
receiver is an SDK client online on WebSocket or long-poll (notify -> pull -> ack); rate limits off.

1. One node (``python server.py``, as the rest of the run starts it): the job with WebSocket receivers,
   then with long-poll receivers.
2. Two nodes sharing the run's store and a ``redis-server`` of their own (``IM_REDIS_URL``), as
   ``scripts/cluster.py start --nodes 2`` runs them but without nginx: senders POST to node 1, receivers
   are connected to node 2, so every message crosses nodes. WebSocket receivers, then long-poll.
3. On the same two nodes: a ``cluster_group_size``-member group, half its members connected to each
   node, ``cluster_group_senders`` members of both nodes POSTing to the group (each to its own node) at
   ``cluster_group_rate`` group messages/s for ``cluster_group_secs``: one hot inbox written from both
   nodes; every answer that is not a receipt is counted by status (503 included).

Every job has accounts of its own. Every process started here is stopped at the end, failed or not.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import time
from contextlib import ExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bench.accounts import create_users, mint_tokens
from bench.procs import Proc, run_json, wait_for_port
from im.storage.embedded import free_port

if TYPE_CHECKING:
    from bench.run import Bench

__all__ = ["JOBS", "STEPS", "measure"]

# Load generator processes get this long on top of what their job should take (as bench/run.py).
SLACK_SECS = 240.0
# A closed-loop job is timed by its own speed; no node of ours delivers fewer than this many msg/s.
SLOWEST_MSGS_PER_SEC = 10.0
# The lines of a node's log worth reporting: its warnings and errors (the nodes log at WARNING).
LOG_LEVELS = re.compile(r" (WARNING|ERROR|CRITICAL) ")
LOG_SAMPLES = 5
# After a job, what its clients' last requests cause is still the job's: seen 0.9 s after the load
# generator left (failed acks of closing long-polls), so its node logs are read this much later.
LOG_SETTLE_SECS = 2.0


@dataclass(frozen=True)
class Job:
    key: str  # also the prefix of its accounts' names
    nodes: int
    kind: str  # "pairs" or "group"
    transport: str
    label: str


JOBS = (
    Job("n1ws", 1, "pairs", "ws", "one node, WebSocket receivers"),
    Job("n1lp", 1, "pairs", "longpoll", "one node, long-poll receivers"),
    Job("n2ws", 2, "pairs", "ws", "two nodes, WebSocket receivers"),
    Job("n2lp", 2, "pairs", "longpoll", "two nodes, long-poll receivers"),
    Job("n2grp", 2, "group", "ws", "two nodes, group written from both"),
)
# Progress-bar steps of this part (one per job).
STEPS = len(JOBS)


class NodeLogs:
    """The warnings and errors each node wrote during one job (from where its log stood before)."""

    def __init__(self, procs: dict[str, Proc]) -> None:
        self._procs = procs
        self._offsets = {name: self._size(proc) for name, proc in procs.items()}

    @staticmethod
    def _size(proc: Proc) -> int:
        try:
            return proc.log_path.stat().st_size
        except OSError:
            return 0

    def read(self) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for name, proc in self._procs.items():
            try:
                with open(proc.log_path, "rb") as log_file:
                    log_file.seek(self._offsets[name])
                    text = log_file.read().decode(errors="replace")
            except OSError:
                continue
            lines = text.splitlines()
            flagged = [line for line in lines if LOG_LEVELS.search(line)]
            samples: list[str] = []
            for line in flagged:
                # Without its timestamp, so repeats of one message are one sample.
                message = line.split(" ", 2)[-1][:300].replace("`", "'")
                if message not in samples:
                    samples.append(message)
            found[name] = {
                "warnings": sum(" WARNING " in line for line in flagged),
                "errors": len(flagged) - sum(" WARNING " in line for line in flagged),
                "tracebacks": sum(line.startswith("Traceback") for line in lines),
                "samples": samples[:LOG_SAMPLES],
            }
        return found


def measure(bench: Bench) -> dict[str, Any]:
    """Run every job; a failed job is recorded (in the results and the run's failures) and the next
    one runs."""
    s = bench.sizes
    assert bench.store is not None
    bench.step("cluster: accounts")
    accounts = _accounts(bench)
    results: dict[str, Any] = {"jobs": {}, "sizes": {
        "pairs": s.cluster_pairs, "messages": s.cluster_messages, "group_size": s.cluster_group_size,
        "group_senders": s.cluster_group_senders, "group_rate": s.cluster_group_rate,
        "group_secs": s.cluster_group_secs,
    }}
    for nodes in (1, 2):
        jobs = [job for job in JOBS if job.nodes == nodes]
        with ExitStack() as stack:
            bench.step(f"cluster: {nodes} node{'s' if nodes > 1 else ''}, starting")
            try:
                started = _start_nodes(bench, stack, nodes)
            except Exception as exc:
                for job in jobs:
                    _failed(bench, results, job, f"nodes did not start: {type(exc).__name__}: {exc}")
                    bench.done()
                continue
            for job in jobs:
                bench.step(f"cluster: {job.label}")
                logs = NodeLogs({n: p for n, p in started.procs.items() if n.startswith("node")})
                try:
                    for url in started.urls:
                        bench.wait_drained(url)
                    results["jobs"][job.key] = _run_job(bench, job, started, accounts[job.key])
                except Exception as exc:
                    _failed(bench, results, job, f"{type(exc).__name__}: {exc}")
                finally:
                    time.sleep(LOG_SETTLE_SECS)
                    results["jobs"].setdefault(job.key, {})["node_logs"] = logs.read()
                    results["jobs"][job.key]["label"] = job.label
                    bench.done()
    return results


def _failed(bench: Bench, results: dict[str, Any], job: Job, text: str) -> None:
    results["jobs"][job.key] = {"error": text[-3000:], "label": job.label}
    bench.results.setdefault("failures", {})[f"cluster: {job.label}"] = text[-3000:]


@dataclass
class Nodes:
    procs: dict[str, Proc]  # node1, node2 and redis
    urls: list[str]  # the nodes'
    redis_url: str | None


def _start_nodes(bench: Bench, stack: ExitStack, nodes: int) -> Nodes:
    """One node as the rest of the run starts it, or a Redis and two nodes; each stopped by ``stack``.
    Every node has the run's store, JWT secret and master key (``Bench.start_server``)."""
    procs: dict[str, Proc] = {}
    env: dict[str, str] = {}
    redis_url = None
    if nodes > 1:
        redis, redis_url = _start_redis(bench)
        stack.callback(_stop, bench, "redis", redis)
        procs["redis"] = redis
        env["IM_REDIS_URL"] = redis_url
    urls = []
    for index in range(1, nodes + 1):
        name = f"node{index}"
        node_env = {**env, "IM_NODE_ID": name, "IM_DATA_DIR": str(bench.work / f"cluster-{nodes}-{name}")}
        # The sampler names the single node "server", as the other parts' server, so the timeline
        # plot shows it on the same line.
        proc, url = bench.start_server(f"cluster{nodes}-{name}", node_env,
                                       sample_as="server" if nodes == 1 else name)
        stack.callback(_stop, bench, name if nodes > 1 else "server", proc)
        procs[name] = proc
        urls.append(url)
    return Nodes(procs, urls, redis_url)


def _stop(bench: Bench, sample_name: str, proc: Proc) -> None:
    proc.stop()
    if bench.sampler.pids.get(sample_name) == proc.pid:
        bench.sampler.pids.pop(sample_name, None)


def _start_redis(bench: Bench) -> tuple[Proc, str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (Debian: apt-get install redis-server; "
                           "`make system-deps` installs it)")
    port = free_port()
    data = bench.work / "redis"
    data.mkdir(exist_ok=True)
    proc = Proc("cluster-redis", [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                  "--appendonly", "no", "--dir", str(data)], log_dir=bench.logs)
    try:
        wait_for_port(port, proc.popen)
    except Exception:
        proc.stop()
        raise RuntimeError(f"redis-server did not start:\n{proc.log_tail()}") from None
    bench.sampler.pids["redis"] = proc.pid
    return proc, f"redis://127.0.0.1:{port}/0"


def _accounts(bench: Bench) -> dict[str, Any]:
    """Fresh users for every job: ``<job>-s<i>`` senders and ``<job>-r<i>`` receivers, ``<job>-m<i>``
    group members; all created at once (one shared password hash, see bench/accounts.py)."""
    s = bench.sizes
    assert bench.store is not None
    names: dict[str, dict[str, list[str]]] = {}
    for job in JOBS:
        if job.kind == "pairs":
            names[job.key] = {"senders": [f"{job.key}-s{i}" for i in range(s.cluster_pairs)],
                              "receivers": [f"{job.key}-r{i}" for i in range(s.cluster_pairs)]}
        else:
            names[job.key] = {"members": [f"{job.key}-m{i}" for i in range(s.cluster_group_size)]}
    every = [user for groups in names.values() for users in groups.values() for user in users]
    asyncio.run(create_users(bench.store.url, bench.db, every))
    tokens = dict(zip(every, mint_tokens(bench.secret, [(u, "bench") for u in every]), strict=True))
    return {
        key: {role: [{"user": u, "token": tokens[u], "device": "bench"} for u in users]
              for role, users in groups.items()}
        for key, groups in names.items()
    }


def _run_job(
    bench: Bench, job: Job, nodes: Nodes, accounts: dict[str, list[dict[str, Any]]]
) -> dict[str, Any]:
    s = bench.sizes
    assert bench.store is not None and bench.store.pid is not None
    urls = nodes.urls
    pids = {name: proc.pid for name, proc in nodes.procs.items()} | {"store": bench.store.pid}
    send_url, receive_url = urls[0], urls[-1]
    if job.kind == "pairs":
        expected_secs = s.cluster_pairs * s.cluster_messages / SLOWEST_MSGS_PER_SEC
        spec: dict[str, Any] = {
            "scenario": "pairs",
            "send_url": send_url,
            "receive_url": receive_url,
            "senders": accounts["senders"],
            "receivers": [{**c, "transport": job.transport} for c in accounts["receivers"]],
            "messages": s.cluster_messages,
            "drain_secs": s.cluster_drain_secs,
            "pids": pids,
            "redis_url": nodes.redis_url,
        }
    else:
        # Members alternate between the nodes, so the first ``senders`` of them (the senders) do too.
        members = [{**c, "transport": job.transport, "url": urls[i % len(urls)]}
                   for i, c in enumerate(accounts["members"])]
        group_id, mode = bench.make_group(urls[0], members)
        if mode != "group":
            raise RuntimeError("the server has no group API (POST /api/v1/groups)")
        expected_secs = s.cluster_group_secs + s.cluster_group_size / SLOWEST_MSGS_PER_SEC
        spec = {
            "scenario": "group",
            "group": group_id,
            "members": members,
            "senders": s.cluster_group_senders,
            "rate": s.cluster_group_rate,
            "secs": s.cluster_group_secs,
            "drain_secs": s.cluster_drain_secs,
            "pids": pids,
            "redis_url": nodes.redis_url,
        }
    result = run_json("bench.closedloop", spec, log_dir=bench.logs, name=f"cluster-{job.key}",
                      timeout_secs=expected_secs + s.cluster_drain_secs + SLACK_SECS)
    result.update({"nodes": job.nodes, "kind": job.kind,
                   "node_roles": _roles(job, urls)})
    return result


def _roles(job: Job, urls: list[str]) -> str:
    if job.kind == "group":
        return "members on both nodes" if len(urls) > 1 else "members on the node"
    return "senders on node 1, receivers on node 2" if len(urls) > 1 else "senders and receivers on the node"

