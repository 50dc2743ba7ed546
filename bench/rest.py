"""The REST part of the benchmark: API callers sending over REST next to SDK clients, on one node.

Why: an API caller sends with ``POST /api/v1/messages`` (one request at a time per kept-alive
connection, a JWT each), an SDK client over its WebSocket; the issue "API callers at SDK speed" asks
for the REST send -> receipt to be within 1.5x of the SDK's send -> ``sent`` at the same offered rate,
for a closed loop of 20 REST senders to deliver >= 1,000 msg/s and >= 0.5x a bare Tornado server doing
the same REST job with no storage, and for where a REST send's time goes. All measured in one run.

Jobs, in this order (each one load-generator process, ``bench/restload.py``; ``rest_senders`` senders
of each kind and as many receivers, fresh accounts per job):

1. ``bare``: ``bench/bare_tornado.py`` (its ``POST /api/v1/messages``: push to the receivers' sockets,
   answer a receipt; no storage, no auth), WebSocket receivers: the closed loop of step 2;
2. ``ws``: the server as ``make run`` starts it (``Bench.start_server``: limits off), receivers online
   over WebSocket: the paced ladder at ``rest_rates`` (REST and SDK senders taking turns in slices),
   then ``rest_messages`` per REST sender in closed loop, then a closed loop of ``rest_profile_secs``
   with py-spy on the server and on the store (``bench/profile.py``);
3. ``longpoll``: the same server, receivers on long-poll: the ladder and the closed loop;
4. ``bare_after``: bare Tornado's closed loop again, so ours is compared with the two around it.

Every process started here is stopped at the end, failed or not.
"""

from __future__ import annotations

import asyncio
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import profile
from bench.accounts import create_users, mint_tokens
from bench.procs import Proc, run_json

if TYPE_CHECKING:
    from bench.run import Bench

__all__ = ["JOBS", "STEPS", "measure"]

# Load generator processes get this long on top of what their job should take (as bench/run.py).
SLACK_SECS = 240.0
# A closed loop is timed by its own speed; no server of ours delivers fewer than this many msg/s.
SLOWEST_MSGS_PER_SEC = 10.0
# The py-spy window starts this long after the profiled round announced itself (bench/restload.py
# runs the round this much longer on each side).
PROFILE_MARGIN_SECS = 1.0


@dataclass(frozen=True)
class Job:
    key: str  # also the prefix of its accounts' names
    target: str  # "im" (ours) or "tornado" (the bare baseline)
    transport: str  # the receivers'
    label: str


# In the order they run. Bare Tornado before and after ours: the machine's other work moves a
# closed loop's rate a lot between minutes (1,027 to 3,000 msg/s for bare Tornado across three runs
# of one hour), so ours is compared with the two around it.
JOBS = (
    Job("bare", "tornado", "ws", "bare Tornado (no storage), WebSocket receivers, before ours"),
    Job("ws", "im", "ws", "ours, WebSocket receivers"),
    Job("longpoll", "im", "longpoll", "ours, long-poll receivers"),
    Job("bare_after", "tornado", "ws", "bare Tornado (no storage), WebSocket receivers, after ours"),
)
# Progress-bar steps of this part (one per job).
STEPS = len(JOBS)


def measure(bench: Bench) -> dict[str, Any]:
    """Run every job; a failed job is recorded (in the results and the run's failures) and the next
    one runs."""
    s = bench.sizes
    bench.step("rest: accounts")
    accounts = _accounts(bench)
    results: dict[str, Any] = {"jobs": {}, "sizes": {
        "senders": s.rest_senders, "rates": s.rest_rates, "step_secs": s.rest_step_secs,
        "messages": s.rest_messages, "profile_secs": s.rest_profile_secs,
    }}
    for target, jobs in _servers():
        with ExitStack() as stack:
            bench.step(f"rest: starting {'the server' if target == 'im' else 'bare Tornado'}")
            try:
                proc, url = (bench.start_server("rest-server") if target == "im"
                             else bench.start_baseline("bench.bare_tornado"))
            except Exception as exc:
                for job in jobs:
                    _failed(bench, results, job, f"server did not start: {type(exc).__name__}: {exc}")
                    bench.done()
                continue
            stack.callback(_stop, bench, proc)
            for job in jobs:
                bench.step(f"rest: {job.label}")
                try:
                    if target == "im":
                        bench.wait_drained(url)
                    results["jobs"][job.key] = _run_job(bench, job, proc, url, accounts[job.key], results)
                except Exception as exc:
                    _failed(bench, results, job, f"{type(exc).__name__}: {exc}")
                finally:
                    results["jobs"].setdefault(job.key, {})["label"] = job.label
                    bench.done()
    return results


def _servers() -> list[tuple[str, list[Job]]]:
    """JOBS in order, grouped by the server they run on (one server started per group)."""
    groups: list[tuple[str, list[Job]]] = []
    for job in JOBS:
        if groups and groups[-1][0] == job.target:
            groups[-1][1].append(job)
        else:
            groups.append((job.target, [job]))
    return groups


def _failed(bench: Bench, results: dict[str, Any], job: Job, text: str) -> None:
    results["jobs"][job.key] = {"error": text[-3000:], "label": job.label}
    bench.results.setdefault("failures", {})[f"rest: {job.label}"] = text[-3000:]


def _stop(bench: Bench, proc: Proc) -> None:
    proc.stop()
    if bench.sampler.pids.get("server") == proc.pid:
        bench.sampler.pids.pop("server", None)


def _accounts(bench: Bench) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """``rest-<job>-s<i>`` REST senders, ``rest-<job>-k<i>`` SDK senders, ``rest-<job>-r<i>`` receivers;
    ours get accounts and tokens, the bare baseline's are names (its bearer token is the name)."""
    s = bench.sizes
    assert bench.store is not None
    names = {
        job.key: {role: [f"rest-{job.key}-{tag}{i}" for i in range(s.rest_senders)]
                  for role, tag in (("rest_senders", "s"), ("sdk_senders", "k"), ("receivers", "r"))
                  if role != "sdk_senders" or job.target == "im"}
        for job in JOBS
    }
    ours = [u for job in JOBS if job.target == "im" for users in names[job.key].values() for u in users]
    asyncio.run(create_users(bench.store.url, bench.db, ours))
    tokens = dict(zip(ours, mint_tokens(bench.secret, [(u, "bench") for u in ours]), strict=True))
    return {
        key: {role: [{"user": u, "token": tokens.get(u, u), "device": "bench"} for u in users]
              for role, users in roles.items()}
        for key, roles in names.items()
    }


def _run_job(bench: Bench, job: Job, proc: Proc, url: str, accounts: dict[str, list[dict[str, Any]]],
             results: dict[str, Any]) -> dict[str, Any]:
    s = bench.sizes
    assert bench.store is not None and bench.store.pid is not None
    ours = job.target == "im"
    pids = {"server": proc.pid} | ({"store": bench.store.pid} if ours else {})
    profiled = ours and job.transport == "ws" and s.rest_profile_secs > 0
    mark = bench.work / f"rest-{job.key}-profile-started"
    mark.unlink(missing_ok=True)
    spec: dict[str, Any] = {
        "scenario": "rest",
        "target": job.target,
        "url": url,
        "receivers": [{**c, "transport": job.transport} for c in accounts["receivers"]],
        "rest_senders": accounts["rest_senders"],
        "sdk_senders": accounts.get("sdk_senders", []),
        # The bare baseline is there for the closed loop only (the paced ladder compares REST with SDK).
        "rates": s.rest_rates if ours else [],
        "step_secs": s.rest_step_secs,
        "drain_secs": s.rest_drain_secs,
        "messages": s.rest_messages,
        "profile_secs": s.rest_profile_secs if profiled else 0,
        "profile_started_file": str(mark),
        "pids": pids,
        "store_url": bench.store.url if ours else None,
    }
    expected_secs = (2 * len(spec["rates"]) * (s.rest_step_secs + s.rest_drain_secs)
                     + 2 * s.rest_senders * s.rest_messages / SLOWEST_MSGS_PER_SEC + s.rest_profile_secs)
    sampled: dict[str, Path | None] = {}
    samplers = []
    if profiled:
        samplers = [threading.Thread(target=_sample, args=(pid, bench.work / f"rest-profile-{name}.txt", mark,
                                                           s.rest_profile_secs, sampled, name), daemon=True)
                    for name, pid in pids.items()]
        for sampler in samplers:
            sampler.start()
    result = run_json("bench.restload", spec, log_dir=bench.logs, name=f"rest-{job.key}",
                      timeout_secs=expected_secs + SLACK_SECS)
    for sampler in samplers:
        sampler.join(s.rest_profile_secs + 90)
    if profiled:
        results["profile"] = _profile_summary(sampled, s.rest_profile_secs, result.get("profiled", {}))
    return result


def _sample(pid: int, out: Path, mark: Path, secs: float, sampled: dict[str, Path | None], name: str) -> None:
    """py-spy on ``pid`` for ``secs``, once the profiled round announced itself (not while clients
    connect or the other rounds run)."""
    deadline = time.monotonic() + SLACK_SECS * 2
    while not mark.exists():
        if time.monotonic() > deadline:
            return
        time.sleep(0.1)
    time.sleep(PROFILE_MARGIN_SECS)
    sampled[name] = out if profile.record(pid, secs, out) else None


def _profile_summary(sampled: dict[str, Path | None], secs: float, load: dict[str, Any]) -> dict[str, Any]:
    summary: dict[str, Any] = {"secs": secs, "load": {k: load.get(k) for k in (
        "delivered_per_sec", "acked", "receipt", "latency", "cpu_secs")}}
    server = sampled.get("server")
    if server is None:
        summary["error"] = "py-spy could not sample the server (missing, or no ptrace permission)"
    else:
        summary.update(profile.summarize_folded(server.read_text(), secs=secs))
    store = sampled.get("store")
    if store is not None:
        summary["store"] = profile.summarize_folded(store.read_text(), secs=secs)
    return summary
