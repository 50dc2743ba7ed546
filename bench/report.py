"""Turn one run's results into ``REPORT.md`` and PNG plots (matplotlib, no display needed)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.cluster import JOBS as CLUSTER_JOBS
from bench.markdown import fmt as _fmt
from bench.markdown import pct as _pct
from bench.markdown import table as _table
from bench.markdown import times as _times
from bench.markdown import yes as _yes
from bench.profile import LOOP_FRAMES
from bench.report_rest import rest_section, rest_summary_rows
from bench.stats import cpu_ms_per, ratio

__all__ = ["TARGETS", "headline", "write"]

TARGETS = (("ours", "ours (durable)"), ("tornado", "bare Tornado"), ("sio", "python-socketio"))
# The targets; the report says for each whether this run met it.
DURABLE_RATIO_TARGET = 1.0
P99_TARGET_MS = 20.0
P99_TARGET_RATE = 1000.0
RSS_PER_CONN_TARGET_KB = 25.0
# Cross-node delivery (bench/cluster.py): the 2-node cluster against one node, same job, same run.
CLUSTER_RATE_TARGET = 0.8  # 2-node delivered msg/s >= this x one node's
CLUSTER_P99_TARGET = 2.0  # 2-node end-to-end p99 <= this x one node's
RECEIVERS = (("ws", "WebSocket"), ("longpoll", "long-poll"))
OP_KINDS = ("insert", "query", "update", "delete", "command")
# The profile of the server before the performance work (``--profile-label before`` wrote it).
STORED_BEFORE_PROFILE = Path(__file__).resolve().parent / "results" / "profile-before.json"


def _steps(results: dict[str, Any], key: str) -> list[dict[str, Any]]:
    return results.get(key, {}).get("chat", {}).get("steps", [])


def best_delivered(steps: Sequence[dict[str, Any]]) -> float:
    """The highest delivered msg/s of a ladder (saturated steps included: that is the ceiling)."""
    return max((s["delivered_per_sec"] for s in steps), default=math.nan)


def step_at(steps: Sequence[dict[str, Any]], rate: float) -> dict[str, Any] | None:
    return next((s for s in steps if s["rate"] == rate), None)


def _notify_p99(step: dict[str, Any] | None, via: str) -> float:
    if not step:
        return math.nan
    return step.get("notify_to_receive", {}).get(via, {}).get("p99_ms", math.nan)


def headline(results: dict[str, Any]) -> dict[str, Any]:
    """The numbers the issue sets targets for, from one run."""
    ours = _steps(results, "ours")
    raw = results.get("store_raw", {}).get("SecantusDB", {})
    raw_again = results.get("store_raw_again", {}).get("SecantusDB", {})
    ours_best = best_delivered(ours)
    at_target = step_at(ours, P99_TARGET_RATE)
    idle = results.get("idle", {})
    per_conn = math.nan
    if idle:
        total = idle["ws"] + idle["longpoll"]
        per_conn = (idle["with_all"]["rss_kb"] - idle["before"]["rss_kb"]) / max(1, total)
    return {
        "ours_best_delivered_per_sec": ours_best,
        "raw_insert_one_per_sec": raw.get("insert_one_per_sec", math.nan),
        "raw_insert_many_docs_per_sec": raw.get("insert_many_docs_per_sec", math.nan),
        "durable_ratio": ratio(ours_best, raw.get("insert_one_per_sec", math.nan)),
        "raw_insert_one_again_per_sec": raw_again.get("insert_one_per_sec", math.nan),
        "durable_ratio_again": ratio(ours_best, raw_again.get("insert_one_per_sec", math.nan)),
        "p99_at_target_rate_ms": at_target["latency"]["p99_ms"] if at_target else math.nan,
        "notify_p99_at_target_rate_ms": _notify_p99(at_target, "ws"),
        "poll_answer_p99_at_target_rate_ms": _notify_p99(at_target, "longpoll"),
        "rss_per_conn_kb": per_conn,
        "clients_back": bool(idle) and idle["after"]["clients"] <= idle["before"]["clients"],
        "fds_back": bool(idle) and idle.get("after_pool", {}).get("fds", math.inf) <= idle["before"]["fds"],
        "tornado_best": best_delivered(_steps(results, "tornado")),
        "sio_best": best_delivered(_steps(results, "sio")),
        **cluster_headline(results),
    }


def _cluster_job(results: dict[str, Any], nodes: int, kind: str, transport: str = "ws") -> dict[str, Any]:
    """The results of the scale-out job with these traits ({} when it did not run or failed)."""
    jobs = results.get("cluster", {}).get("jobs", {})
    for job in CLUSTER_JOBS:
        if job.nodes == nodes and job.kind == kind and (kind == "group" or job.transport == transport):
            found = jobs.get(job.key, {})
            return found if "delivered" in found else {}
    return {}


def cluster_headline(results: dict[str, Any]) -> dict[str, Any]:
    """2-node against 1-node figures of the scale-out part, per receiver transport."""
    figures: dict[str, Any] = {}
    for transport, _ in RECEIVERS:
        one, two = _cluster_job(results, 1, "pairs", transport), _cluster_job(results, 2, "pairs", transport)
        figures[f"cluster_rate_ratio_{transport}"] = ratio(
            two.get("delivered_per_sec", math.nan), one.get("delivered_per_sec", math.nan)
        )
        figures[f"cluster_p99_ratio_{transport}"] = ratio(
            two.get("latency", {}).get("p99_ms", math.nan), one.get("latency", {}).get("p99_ms", math.nan)
        )
    group = _cluster_job(results, 2, "group")
    figures["cluster_group_503"] = group["non_2xx"].get("503", 0) if group else math.nan
    measured = [j for j in results.get("cluster", {}).get("jobs", {}).values() if "delivered" in j]
    for what in ("lost", "duplicated", "reordered"):
        figures[f"cluster_{what}"] = sum(j[what] for j in measured) if measured else math.nan
    return figures


def write(results: dict[str, Any], out: Path, *, profile_label: str = "") -> Path:
    out.mkdir(parents=True, exist_ok=True)
    plots = _plots(results, out)
    if profile_label and "profile" in results:
        (out / f"profile-{profile_label}.json").write_text(
            json.dumps(_profile_digest(results["profile"]), indent=1) + "\n"
        )
    before = None
    if profile_label != "before":
        # The stored "before" profile lives in the repository; a run writing elsewhere (--out) still
        # shows it next to its own.
        for before_path in (out / "profile-before.json", STORED_BEFORE_PROFILE):
            if before_path.exists():
                before = json.loads(before_path.read_text())
                break
    path = out / "REPORT.md"
    path.write_text("\n".join(_markdown(results, plots, before)) + "\n")
    return path


def _profile_digest(prof: dict[str, Any]) -> dict[str, Any]:
    return {k: prof.get(k) for k in ("rate", "samples", "busy_share", "self", "inclusive", "layers")} | {
        "delivered_per_sec": prof.get("load", {}).get("delivered_per_sec"),
        "latency": prof.get("load", {}).get("latency"),
    }


def _markdown(results: dict[str, Any], plots: list[str], before: dict[str, Any] | None) -> list[str]:
    h = headline(results)
    sizes = results["sizes"]
    machine = results.get("machine", {})
    md = [
        "# Benchmark report",
        "",
        f"One run of `python -m bench.run`, {results.get('started', '')} to {results.get('finished', '')} "
        f"({_fmt(results.get('wall_secs', math.nan), 0)} s), on {machine.get('cpus', '?')} cores, "
        f"Python {machine.get('python', '?')}, event loop {machine.get('event_loop', 'asyncio')} (ours, the "
        "baselines, the store baseline's client and the load generators alike). Every server, the store and "
        "every load generator ran on this "
        "machine at once, so the load generator's CPU is part of every figure (its share of one core is "
        "in the tables). Figures are from this one run; the summary quotes medians and ratios.",
        "",
        "## Summary against the targets",
        "",
    ]
    md += _table(
        ("what", "this run", "target", "met"),
        [
            ("durable delivered msg/s (1:1, best ladder step)", h["ours_best_delivered_per_sec"], "", ""),
            ("store raw serial insert_one /s (same store, same run)", h["raw_insert_one_per_sec"], "", ""),
            (
                "ratio durable delivered / raw insert_one",
                _times(h["durable_ratio"]),
                f">= {DURABLE_RATIO_TARGET:.1f}x",
                _yes(h["durable_ratio"] >= DURABLE_RATIO_TARGET),
            ),
            (
                "store raw serial insert_one /s, measured again after ours' ladder",
                h["raw_insert_one_again_per_sec"], "", "",
            ),
            (
                "ratio durable delivered / raw insert_one measured again",
                _times(h["durable_ratio_again"]), "", "",
            ),
            (
                f"end-to-end p99 at {P99_TARGET_RATE:g} msg/s (ms)",
                h["p99_at_target_rate_ms"],
                f"< {P99_TARGET_MS:g}",
                _yes(h["p99_at_target_rate_ms"] < P99_TARGET_MS),
            ),
            (
                f"notify-to-receive p99 at {P99_TARGET_RATE:g} msg/s (ms), WebSocket recipients",
                h["notify_p99_at_target_rate_ms"],
                f"< {P99_TARGET_MS:g}",
                _yes(h["notify_p99_at_target_rate_ms"] < P99_TARGET_MS),
            ),
            (
                f"long-poll answer-to-receive p99 at {P99_TARGET_RATE:g} msg/s (ms): the answer is the "
                "notify and carries the messages",
                h["poll_answer_p99_at_target_rate_ms"],
                "",
                "",
            ),
            (
                "server RSS per idle connection (KB)",
                h["rss_per_conn_kb"],
                f"< {RSS_PER_CONN_TARGET_KB:g}",
                _yes(h["rss_per_conn_kb"] < RSS_PER_CONN_TARGET_KB),
            ),
            (
                "client connections back to baseline after clients left",
                "yes" if h["clients_back"] else "no",
                "yes",
                _yes(h["clients_back"]),
            ),
            (
                "server descriptors back to baseline after clients left (store pool idled out)",
                "yes" if h["fds_back"] else "no",
                "yes",
                _yes(h["fds_back"]),
            ),
            (
                "ours / bare Tornado (best delivered msg/s)",
                _times(ratio(h["ours_best_delivered_per_sec"], h["tornado_best"])),
                "",
                "",
            ),
            (
                "ours / python-socketio (best delivered msg/s)",
                _times(ratio(h["ours_best_delivered_per_sec"], h["sio_best"])),
                "",
                "",
            ),
        ],
    )
    if "rest" in results:
        md = md[:-1] + _table(("", "", "", ""), rest_summary_rows(results))[2:-1] + [""]
    if "cluster" in results:
        md = md[:-1] + _cluster_summary_rows(h) + [""]
    failures = results.get("failures", {})
    if failures:
        md += [
            "## Parts that failed",
            "",
            "Their tables are missing below; the load generators' and servers' "
            "logs are in the work directory (`--keep-work`).",
            "",
        ]
        md += [f"- **{name}**: `{text.splitlines()[-1] if text else ''}`" for name, text in failures.items()]
        md += [""]
    md += _limit_note(results)
    md += _store_section(results)
    md += _chat_section(results)
    md += _group_section(results)
    md += _idle_section(results)
    md += _storm_section(results)
    md += rest_section(results)
    md += _scaleout_section(results)
    md += _profile_section(results.get("profile", {}), before)
    md += _durations_section(results)
    md += ["## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    md += _method(sizes)
    return md


def _phase_cpu(results: dict[str, Any], phase: str, name: str) -> float:
    """Median CPU (cores) of ``name`` (server or store) over the samples of one phase of the run."""
    values = sorted(
        row[f"{name}_cpu"]
        for row in results.get("timeline", [])
        if row.get("phase") == phase and f"{name}_cpu" in row
    )
    return values[len(values) // 2] if values else math.nan


def _limit_note(results: dict[str, Any]) -> list[str]:
    """What bounds our delivery rate, in this run's numbers: store operations per delivered message,
    and how busy the server and the store were during the ladder (whichever is near a full core)."""
    steps = _steps(results, "ours")
    if not steps or not steps[0].get("store_ops_per_delivery"):
        return []
    best = max(steps, key=lambda s: s["delivered_per_sec"])
    per_msg = sum(best["store_ops_per_delivery"].values())
    raw = results.get("store_raw", {}).get("SecantusDB", {}).get("insert_one_per_sec", math.nan)
    phase = "ours: 1:1 chat ladder"
    server_cpu, store_cpu = _phase_cpu(results, phase, "server"), _phase_cpu(results, phase, "store")
    return [
        f"At its best step ours delivered {_fmt(best['delivered_per_sec'])} msg/s while the store executed "
        f"{_fmt(per_msg)} commands per delivered message ({_fmt(per_msg * best['delivered_per_sec'], 0)} "
        "commands/s; a batch's insert is one command however many documents it holds; one serial "
        f"insert_one runs at {_fmt(raw)}/s on the same store). During the ladder "
        f"the server used a median {_fmt(server_cpu, 2)} cores and the store {_fmt(store_cpu, 2)} (each "
        "is one Python process: near 1.0 is that process's ceiling); see the operations table and the "
        "profiles below.",
        "",
    ]


def _pool_row(idle: dict[str, Any]) -> list[tuple[Any, ...]]:
    """The idle table's last row: once the store driver closed the connections the burst opened."""
    pool = idle.get("after_pool")
    if not pool:
        return []
    label = f"+ {_fmt(idle['fds_back_secs'])} s, store pool idled out"
    return [(label, pool["rss_kb"] / 1024, pool["fds"], pool["clients"], pool.get("ws"),
             pool.get("lp_waiters"), "")]


def _descriptors_back(idle: dict[str, Any]) -> str:
    pool = idle.get("after_pool")
    if not pool:
        return ""
    return (f" The server's descriptors were {pool['fds']} (before the phase: {idle['before']['fds']}) "
            f"{_fmt(idle['fds_back_secs'])} s later: the store driver closes the connections the burst "
            "of logins opened once they are unused for `IM_MONGO_MAX_IDLE_SECS`.")


def _store_section(results: dict[str, Any]) -> list[str]:
    md = [
        "## Baseline 1: the store's raw limit",
        "",
        "Serial inserts of archive-sized documents through `pymongo.AsyncMongoClient` (Motor's successor) "
        "with the server's write concern (`w: majority, j: true`), against the same SecantusDB the server "
        "then uses.",
        "",
    ]
    rows = [
        (name, r["insert_one_per_sec"], r["insert_many_docs_per_sec"], r["batch"])
        for name, r in results.get("store_raw", {}).items()
    ]
    rows += [
        (f"{name}, again after ours' ladder", r["insert_one_per_sec"], r["insert_many_docs_per_sec"],
         r["batch"])
        for name, r in results.get("store_raw_again", {}).items()
    ]
    return md + _table(("store", "insert_one /s", "insert_many docs/s", "batch"), rows)


def _chat_section(results: dict[str, Any]) -> list[str]:
    md = [
        "## 1:1 chat at increasing rates",
        "",
        "Clients in pairs, each sending to its partner, open loop at the offered aggregate rate. Latency: "
        "send call -> message in the recipient's callback. `delivered/s`: deliveries per second in the "
        "second half of the sending window, whichever step sent them (the steady rate: the throughput); "
        "`own in window/s`: only this step's messages delivered inside the whole window, which also "
        "drops what was sent in the window's last latency's worth of seconds (earlier reports used it as "
        "`delivered/s`). A step that delivers less than 85 % of what was offered is saturated and ends "
        f"the ladder (ours is still measured at {P99_TARGET_RATE:g} msg/s, where the targets are set, "
        "if it saturates below). After each step's window, receipts and deliveries get one drain "
        "deadline; `late`: delivered after it (during the next step or the final drain; their latency is "
        "in the percentiles), `lost`: never delivered. `skipped`: sends the generator did not issue "
        "because that sender already had 8 unanswered (the sign of saturation, instead of an unbounded "
        "queue).",
        "",
    ]
    for key, label in TARGETS:
        steps = _steps(results, key)
        if not steps:
            continue
        chat = results[key]["chat"]
        md += [f"### {label} ({chat['clients']} clients)", ""]
        md += _table(
            (
                "offered/s",
                "delivered/s",
                "own in window/s",
                "p50 ms",
                "p90 ms",
                "p99 ms",
                "max ms",
                "receipt p50 ms",
                "late",
                "lost",
                "skipped",
                "errors",
                "loadgen CPU",
            ),
            [
                (
                    s["rate"],
                    s["delivered_per_sec"],
                    s.get("own_in_window_per_sec", math.nan),
                    s["latency"]["p50_ms"],
                    s["latency"]["p90_ms"],
                    s["latency"]["p99_ms"],
                    s["latency"]["max_ms"],
                    s["receipt"]["p50_ms"],
                    s.get("late", 0),
                    s["lost"],
                    s["skipped"],
                    sum(s["send_errors"].values()),
                    f"{s['loadgen_cpu_share']:.0%}",
                )
                for s in steps
            ],
        )
    ours = _steps(results, "ours")
    op_rows = [
        (
            step["rate"],
            *(step.get("store_ops_per_delivery", {}).get(k, math.nan) for k in OP_KINDS),
            sum(step.get("store_ops_per_delivery", {}).values()),
        )
        for step in ours
    ]
    if op_rows:
        md += [
            "### Ours: store commands per delivered message (SecantusDB `serverStatus` opcounters)",
            "",
            "Around each step. SecantusDB counts commands: a bulk insert or update is one, however many "
            "documents it holds (mongod counts inserted documents one by one), so these figures fall as "
            "group-commit batches grow and are not the store's work per message (for that, see the cost "
            "per statement in docs/performance.md). A 1:1 message enters two inboxes (the recipient's "
            "and the sender's own, for the sender's other devices), so both pull and acknowledge it.",
            "",
        ]
        md += _table(("offered/s", *OP_KINDS, "total"), op_rows)
    md += _chat_cpu_table(results, ours)
    md += _notify_table(ours, results.get("ours", {}).get("chat", {}).get("skipped_rates", []))
    rows = []
    for step in ours:
        row: list[Any] = [step["rate"], step["latency"]["p50_ms"], step["latency"]["p99_ms"]]
        for key in ("tornado", "sio"):
            other = step_at(_steps(results, key), step["rate"])
            row += [
                ratio(step["latency"]["p50_ms"], other["latency"]["p50_ms"]) if other else math.nan,
                ratio(step["delivered_per_sec"], other["delivered_per_sec"]) if other else math.nan,
            ]
        rows.append(row)
    if rows:
        md += ["### Ours as ratios to the baselines, per offered rate", ""]
        md += _table(
            (
                "offered/s",
                "ours p50 ms",
                "ours p99 ms",
                "p50 / Tornado",
                "delivered / Tornado",
                "p50 / socketio",
                "delivered / socketio",
            ),
            rows,
        )
    return md


def _chat_cpu_table(results: dict[str, Any], ours: Sequence[dict[str, Any]]) -> list[str]:
    """CPU per delivered message at each offered rate: ours (server, and server + store), and the
    baselines' servers (they have no store)."""
    rows = []
    for step in ours:
        row: list[Any] = [step["rate"], *_step_cpu_cells(step)]
        for key in ("tornado", "sio"):
            other = step_at(_steps(results, key), step["rate"])
            row.append(_step_cpu_cells(other)[0] if other else math.nan)
        rows.append(row)
    if all(math.isnan(v) for row in rows for v in row[1:]):
        return []  # a run from before CPU was read per step
    md = [
        "### CPU per delivered message",
        "",
        "CPU seconds of each process over the step (its sending window and its drain), per message "
        "delivered by the drain deadline, ms. The load generator's own CPU is not in it.",
        "",
    ]
    return md + _table(("offered/s", "ours: server", "ours: server + store", "bare Tornado: server",
                        "python-socketio: server"), rows)


def _notify_table(steps: Sequence[dict[str, Any]], skipped_rates: Sequence[float]) -> list[str]:
    """Ours: notify reaching the recipient's SDK -> message in its callback, per step and transport."""
    if not any(step.get("notify_to_receive") for step in steps):
        return []
    md = [
        "### Ours: notify-to-receive (recipient side)",
        "",
        "From the moment the recipient's SDK has the notify to the moment the message is in its callback. "
        "WebSocket: notify frame read -> pull sent -> `msgs` answer -> callback, i.e. one pull round trip "
        "plus queueing in the client and server. Long-poll: the poll's answer is the notify and already "
        "carries the messages, so this is only the client's decoding (~0); its real cost is in the "
        "end-to-end latency above (the next poll is a new request). Each message is timed from the first "
        "notify that covered its seq; `before notify`: messages that came in a pull before their own "
        "notify arrived (a pull woken by an earlier notify found them already stored), not timed.",
        "",
    ]
    rows = []
    for step in steps:
        ws = step.get("notify_to_receive", {}).get("ws", {})
        lp = step.get("notify_to_receive", {}).get("longpoll", {})
        rows.append(
            (
                step["rate"],
                ws.get("count", 0),
                ws.get("p50_ms", math.nan),
                ws.get("p90_ms", math.nan),
                ws.get("p99_ms", math.nan),
                ws.get("max_ms", math.nan),
                lp.get("count", 0),
                lp.get("p50_ms", math.nan),
                lp.get("p99_ms", math.nan),
                step.get("before_notify", 0),
            )
        )
    md += _table(
        (
            "offered/s",
            "WS msgs",
            "WS p50 ms",
            "WS p90 ms",
            "WS p99 ms",
            "WS max ms",
            "long-poll msgs",
            "long-poll p50 ms",
            "long-poll p99 ms",
            "before notify",
        ),
        rows,
    )
    if skipped_rates:
        md += [
            "Rates not run (past saturation): " + ", ".join(f"{r:g}" for r in skipped_rates) + " msg/s.",
            "",
        ]
    return md


def _group_section(results: dict[str, Any]) -> list[str]:
    rows = []
    for key, label in TARGETS:
        group = results.get(key, {}).get("group")
        if not group:
            continue
        s = group["step"]
        rows.append(
            (
                label,
                group["members"],
                group["mode"],
                s["rate"],
                s["offered_deliveries_per_sec"],
                s["delivered_per_sec"],
                s["latency"]["p50_ms"],
                s["latency"]["p90_ms"],
                s["latency"]["p99_ms"],
                s["latency"]["max_ms"],
                s["lost"],
                *_step_cpu_cells(s),
            )
        )
    if not rows:
        return []
    md = [
        "## A group",
        "",
        "Every member connected; some members send to the group; each message is delivered to every other "
        "member. `mode direct` means the server had no group API when this ran, so each group message was "
        "sent as one one-to-one message per member (same fan-out, many more writes). CPU: the server's "
        "and the store's over the step (its sending and its drain) per delivery made by then.",
        "",
    ]
    return md + _table(
        (
            "server",
            "members",
            "mode",
            "group msgs/s",
            "offered deliveries/s",
            "delivered/s",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "max ms",
            "lost",
            *STEP_CPU_HEADERS,
        ),
        rows,
    )


# The headers of ``_step_cpu_cells``.
STEP_CPU_HEADERS = ("server CPU ms / delivery", "server + store CPU ms / delivery")


def _step_cpu_cells(step: dict[str, Any]) -> tuple[float, float]:
    """A ladder or group step's server CPU, and server + store CPU, per delivery made by its drain
    deadline, ms (NaN for runs older than the measurement, or a baseline's missing store)."""
    cpu, count = step.get("cpu_secs", {}), step.get("delivered_at_step_end", 0)
    both = cpu_ms_per(cpu, count) if "store" in cpu else math.nan
    return cpu_ms_per(cpu, count, lambda name: name == "server"), both


def _idle_section(results: dict[str, Any]) -> list[str]:
    idle = results.get("idle")
    if not idle:
        return []
    total = idle["ws"] + idle["longpoll"]
    b, ws, both, after = idle["before"], idle["with_ws"], idle["with_all"], idle["after"]
    held = idle.get("after_hold", both)
    md = [
        "## Idle connections on one server process",
        "",
        f"{idle['ws']:,} WebSocket clients connect and authenticate, then {idle['longpoll']:,} long-poll "
        "clients park a poll; server RSS (VmRSS of /proc/<pid>/status) and open descriptors are read "
        "before, after each phase, after holding every connection idle for "
        f"{_fmt(idle.get('hold_secs', 0), 0)} s, after every client left, and once the server's "
        "descriptors were back to their count before the phase (or "
        f"{_fmt(idle.get('fds_back_timeout_secs'), 0)} s had passed). Per connection = "
        "RSS delta / connections. Client connections: established TCP connections on the server's port (from "
        "/proc/<pid>/net/tcp); other descriptors are the store driver's pool. `ws` and `parked polls` "
        "are the server's own gauges from `/metrics` (`im_connections{transport=\"ws\"}`, "
        "`im_long_poll_waiters`): a phase ends when the server holds them, not when the clients say so.",
        "",
    ]
    md += _table(
        (
            "phase",
            "server RSS MB",
            "descriptors",
            "client connections",
            "ws",
            "parked polls",
            "RSS per connection KB",
        ),
        [
            ("before", b["rss_kb"] / 1024, b["fds"], b["clients"], b.get("ws"), b.get("lp_waiters"), ""),
            (
                f"+ {idle['ws']:,} WebSocket",
                ws["rss_kb"] / 1024,
                ws["fds"],
                ws["clients"],
                ws.get("ws"),
                ws.get("lp_waiters"),
                (ws["rss_kb"] - b["rss_kb"]) / max(1, idle["ws"]),
            ),
            (
                f"+ {idle['longpoll']:,} long-poll",
                both["rss_kb"] / 1024,
                both["fds"],
                both["clients"],
                both.get("ws"),
                both.get("lp_waiters"),
                (both["rss_kb"] - ws["rss_kb"]) / max(1, idle["longpoll"]),
            ),
            (
                f"after {_fmt(idle.get('hold_secs', 0), 0)} s idle",
                held["rss_kb"] / 1024,
                held["fds"],
                held["clients"],
                held.get("ws"),
                held.get("lp_waiters"),
                "",
            ),
            ("all, per connection", "", "", "", "", "", (both["rss_kb"] - b["rss_kb"]) / max(1, total)),
            (
                "after all left",
                after["rss_kb"] / 1024,
                after["fds"],
                after["clients"],
                after.get("ws"),
                after.get("lp_waiters"),
                "",
            ),
            *_pool_row(idle),
        ],
    )
    connect_secs = idle["ws_connect_secs"] + idle["lp_connect_secs"]
    md += [
        f"Connecting took {_fmt(idle['ws_connect_secs'])} s for the WebSockets "
        f"({_fmt(idle['ws'] / max(1e-9, idle['ws_connect_secs']), 0)}/s) and "
        f"{_fmt(idle['lp_connect_secs'])} s until the server held every long-poll parked "
        f"({_fmt(idle['longpoll'] / max(1e-9, idle['lp_connect_secs']), 0)}/s), "
        f"{_fmt(connect_secs)} s in all, at most {idle.get('connect_concurrency', '?')} clients "
        "connecting at a time; client connections were back to the baseline within "
        f"{_fmt(idle['leave_secs'])} s of the clients leaving.{_descriptors_back(idle)} Connect errors: "
        f"{idle['connect_error_count']}. SDK reconnects: {idle.get('reconnects_after_ws', 0)} while the "
        f"WebSockets connected, {idle.get('reconnects_after_connect', 0)} after the long-polls too, "
        f"{idle.get('reconnects_after_hold', 0)} after the idle hold, {idle.get('client_reconnects', 0)} "
        f"in all ({idle.get('workers', 1)} load-generator processes held the clients). The load "
        f"generators grew by {_fmt(idle['loadgen_rss_delta_kb'] / max(1, total))} KB per client (SDK "
        "client + its socket).",
        "",
        f"The idle long-polls ask for a {idle.get('poll_timeout_secs', 25)} s wait (the idle server's "
        "`IM_LONG_POLL_MAX_SECS` allows it), longer than the whole phase, so each parks exactly once and "
        "the figures are of parked polls. With the SDK's default 25 s, 5,000 long-polls would also "
        "re-poll 200 times a second (a request, a token check and a pull each), which is load, not "
        "idleness. An earlier version of this benchmark (2026-11-28) started every long-poll client at "
        "once: 5,000 first polls queued at the server, most outlived the SDK's 10 s answer timeout and "
        "were retried behind the abandoned ones (38,794 reconnects); and it waited for TCP connections "
        "to reach 99 % of all clients, which polls that open a connection per request never all hold at "
        "once, so the phase ran into its 600 s timeout (605 s) and its reading showed 10,000 client "
        "connections: no long-poll parked at all. Now long-poll clients connect at the same bounded "
        "concurrency as the WebSockets, and the phase ends on the server's `im_long_poll_waiters`.",
        "",
        "RSS after the clients left stays near its peak: CPython keeps freed memory in its arenas "
        "for reuse. The client-connection count is what shows that every socket was released (a long-poll "
        "waiter lives exactly as long as its request).",
        "",
    ]
    return md


def _storm_section(results: dict[str, Any]) -> list[str]:
    storm = results.get("storm")
    if not storm:
        return []
    c = storm["catch_up"]
    md = [
        "## Reconnect storm",
        "",
        f"{storm['clients']:,} clients ({storm['ws']} WebSocket, {storm['longpoll']} long-poll), each with "
        f"{storm['backlog']} messages waiting, connect at the same moment and pull their backlog. Catch-up: "
        "from the storm's start until the client's callback has its whole backlog. CPU: the server's and "
        "the store's from the storm's start until the last client caught up, per message delivered.",
        "",
    ]
    return md + _table(
        (
            "clients",
            "caught up",
            "catch-up p50 ms",
            "p90 ms",
            "p99 ms",
            "max ms",
            "delivered msg/s",
            "connect errors",
            "reconnects",
            "server + store CPU ms / msg",
        ),
        [
            (
                storm["clients"],
                storm["caught_up"],
                c["p50_ms"],
                c["p90_ms"],
                c["p99_ms"],
                c["max_ms"],
                storm["delivered_per_sec"],
                storm["connect_error_count"],
                storm["reconnects"],
                cpu_ms_per(storm.get("cpu_secs", {}), storm.get("delivered", 0)),
            )
        ],
    )



def _cluster_summary_rows(h: dict[str, Any]) -> list[str]:
    """The scale-out part's rows of the summary table (rows only: they continue that table)."""
    rows: list[tuple[Any, ...]] = []
    for transport, label in RECEIVERS:
        rate, p99 = h[f"cluster_rate_ratio_{transport}"], h[f"cluster_p99_ratio_{transport}"]
        rows += [
            (
                f"2-node / 1-node delivered msg/s, {label} receivers",
                _times(rate),
                f">= {CLUSTER_RATE_TARGET:g}x",
                _yes(rate >= CLUSTER_RATE_TARGET),
            ),
            (
                f"2-node / 1-node e2e p99, {label} receivers",
                _times(p99),
                f"<= {CLUSTER_P99_TARGET:g}x",
                _yes(p99 <= CLUSTER_P99_TARGET),
            ),
        ]
    refused = h["cluster_group_503"]
    rows.append(("2-node group: sends refused (503)", refused, "0", _yes(refused == 0)))
    counts = [h["cluster_lost"], h["cluster_duplicated"], h["cluster_reordered"]]
    rows.append((
        "cluster jobs: lost / duplicated / reordered",
        " / ".join(_fmt(c) for c in counts),
        "0",
        _yes(all(c == 0 for c in counts)),
    ))
    return _table(("", "", "", ""), rows)[2:-1]


# The headers of ``_delivery_cells`` after its rate column.
DELIVERY_LATENCY_HEADERS = ("receipt p50 ms", "receipt p99 ms", "e2e p50 ms", "e2e p99 ms", "e2e max ms",
                            "lost", "duplicated", "reordered")


def _delivery_cells(job: dict[str, Any]) -> tuple[Any, ...]:
    """A cluster job's delivery columns: rate, receipt and end-to-end latency, lost / duplicated /
    reordered."""
    receipt, latency = job["receipt"], job["latency"]
    return (job["delivered_per_sec"], receipt["p50_ms"], receipt["p99_ms"], latency["p50_ms"],
            latency["p99_ms"], latency["max_ms"], job["lost"], job["duplicated"], job["reordered"])


def _not_receipts(job: dict[str, Any]) -> str:
    """Answers to sends that were not receipts, by HTTP status ("no answer": refused, reset or timed
    out), e.g. ``503: 4``; "none"."""
    found = job.get("non_2xx", {})
    return ", ".join(f"{k}: {v:,}" for k, v in sorted(found.items())) if found else "none"


def _cpu_cell(job: dict[str, Any]) -> str:
    return ", ".join(f"{name} {secs:.2f}" for name, secs in sorted(job.get("cpu_secs", {}).items()))


def _node_cpu_ms(job: dict[str, Any]) -> float:
    """Server CPU (every node's) per delivered message, ms."""
    return cpu_ms_per(job.get("cpu_secs", {}), job.get("delivered", 0), lambda name: name.startswith("node"))


def _nodes_store_cpu_ms(job: dict[str, Any]) -> float:
    """Server (every node's) and store CPU per delivered message, ms (Redis left out)."""
    return cpu_ms_per(job.get("cpu_secs", {}), job.get("delivered", 0),
                      lambda name: name.startswith("node") or name == "store")


def _scaleout_section(results: dict[str, Any]) -> list[str]:
    part = results.get("cluster")
    if not part:
        return []
    jobs = part.get("jobs", {})
    sizes = part.get("sizes", {})
    md = [
        "## Scale-out: one node and two",
        "",
        f"{sizes.get('pairs', '?')} pairs: each sender POSTs {sizes.get('messages', '?')} one-to-one "
        "messages over REST (`POST /api/v1/messages`, one kept-alive connection per sender), the next as "
        "soon as the previous one's receipt came back (closed loop); each receiver is an SDK client online "
        "over WebSocket or long-poll (notify -> pull -> ack); rate limits off. First on one node "
        "(`python server.py`, as `make run`), then on a local 2-node cluster (two `server.py` with "
        "`IM_REDIS_URL` on one `redis-server` and the run's store, as `scripts/cluster.py start --nodes 2` "
        "without nginx) with the senders on node 1 and the receivers on node 2, so every message crosses "
        "nodes. Every job has fresh accounts and a warm-up round (one message per sender) before it is "
        "measured. `delivered msg/s`: messages received / the time from the first send to the last "
        "receipt or delivery, whichever came later; `receipt`: POST -> receipt, retries included; "
        "`e2e`: the send time written in the body -> the message in the receiver's callback. `lost`: "
        "acknowledged sends that never arrived; `duplicated`: arrived twice (the SDK already drops "
        "entries it has by seq, so these would be two entries of one message); `reordered`: arrived after "
        "a later message of the same sender (a sender's next send waits for the previous receipt, so the "
        "order is defined). An answer that is not a receipt is counted by status and the same "
        "`client_msg_id` is sent again. CPU: seconds of each process over the measured round (after "
        "the warm-up); nodes' CPU per message is every node's CPU over the messages delivered.",
        "",
        "Every process runs on this one machine: the second node adds no core, so these figures are the "
        "cost of going across nodes (a Redis publish and the notify on the other node, two processes "
        "sharing the cores and the store), not added capacity.",
        "",
    ]
    rows = []
    for job in CLUSTER_JOBS:
        found = jobs.get(job.key, {})
        if job.kind != "pairs" or "delivered" not in found:
            continue
        rows.append((
            job.label,
            found["acked"],
            *_delivery_cells(found),
            _not_receipts(found),
            _cpu_cell(found),
            _node_cpu_ms(found),
            _nodes_store_cpu_ms(found),
            f"{found.get('loadgen_cpu_share', math.nan):.0%}",
        ))
    if rows:
        md += _table(
            (
                "job",
                "sends acked",
                "delivered msg/s",
                *DELIVERY_LATENCY_HEADERS,
                "not receipts",
                "CPU s by process",
                "nodes' CPU ms/msg",
                "nodes + store CPU ms/msg",
                "loadgen CPU",
            ),
            rows,
        )
    h = cluster_headline(results)
    ratio_rows = []
    for transport, label in RECEIVERS:
        one, two = _cluster_job(results, 1, "pairs", transport), _cluster_job(results, 2, "pairs", transport)
        if not one and not two:
            continue
        rate, p99 = h[f"cluster_rate_ratio_{transport}"], h[f"cluster_p99_ratio_{transport}"]
        ratio_rows.append((
            label,
            one.get("delivered_per_sec", math.nan),
            two.get("delivered_per_sec", math.nan),
            _times(rate),
            _yes(rate >= CLUSTER_RATE_TARGET),
            one.get("latency", {}).get("p99_ms", math.nan),
            two.get("latency", {}).get("p99_ms", math.nan),
            _times(p99),
            _yes(p99 <= CLUSTER_P99_TARGET),
        ))
    if ratio_rows:
        md += [
            f"Two nodes against one (targets: delivered msg/s >= {CLUSTER_RATE_TARGET:g}x, e2e p99 <= "
            f"{CLUSTER_P99_TARGET:g}x the one node's):",
            "",
        ]
        md += _table(
            (
                "receivers",
                "1 node msg/s",
                "2 nodes msg/s",
                "2 / 1",
                "met",
                "1 node e2e p99 ms",
                "2 nodes e2e p99 ms",
                "2 / 1",
                "met",
            ),
            ratio_rows,
        )
    group = _cluster_job(results, 2, "group")
    if group:
        refused = group["non_2xx"].get("503", 0)
        others = {k: v for k, v in group["non_2xx"].items() if k != "503"}
        md += [
            f"### A group written from both nodes ({group['members']} members)",
            "",
            f"Half the members connected to each node (SDK, WebSocket); {group['senders']} members, half "
            "on each node, POST to the group on their own node: one group inbox written from two nodes "
            f"at {group['rate']:g} group messages/s in all for {sizes.get('group_secs', 0):g} s, each "
            f"delivered to the {group['fanout']} other members ({group['rate'] * group['fanout']:,.0f} "
            "deliveries/s offered). `refused (503)`: answers 503 to a send (each retried with its "
            "`client_msg_id`; target: none).",
            "",
        ]
        md += _table(
            (
                "group msgs acked",
                "abandoned",
                "deliveries/s",
                *DELIVERY_LATENCY_HEADERS,
                "refused (503)",
                "other not receipts",
                "CPU s by process",
                "nodes' CPU ms/delivery",
                "nodes + store CPU ms/delivery",
            ),
            [(
                group["acked"],
                group["abandoned"],
                *_delivery_cells(group),
                refused,
                _not_receipts({"non_2xx": others}),
                _cpu_cell(group),
                _node_cpu_ms(group),
                _nodes_store_cpu_ms(group),
            )],
        )
    md += _redis_table(jobs)
    md += _cluster_notes(jobs)
    return md


def _redis_table(jobs: dict[str, Any]) -> list[str]:
    """Redis commands per delivered message on two nodes: the cross-node traffic, by command."""
    rows = []
    for job in CLUSTER_JOBS:
        found = jobs.get(job.key, {})
        calls = found.get("redis_calls")
        if job.nodes < 2 or "delivered" not in found or calls is None:
            continue
        per = max(1, found["delivered"])
        top = ", ".join(f"{name} {count / per:.2f}" for name, count in list(calls.items())[:5])
        rows.append((job.label, sum(calls.values()) / per, top or "none"))
    if not rows:
        return []
    md = [
        "Redis on two nodes (`INFO commandstats` before and after the measured round): commands per "
        "delivered message, and the most frequent ones.",
        "",
    ]
    return md + _table(("job", "Redis commands / msg", "most frequent (per msg)"), rows)


def _cluster_notes(jobs: dict[str, Any]) -> list[str]:
    """Jobs that failed, sends given up, reconnects, and what the nodes logged (warnings and errors)."""
    notes = []
    for job in CLUSTER_JOBS:
        found = jobs.get(job.key)
        if not found:
            continue
        if "error" in found:
            lines = found["error"].strip().splitlines()
            notes.append(f"- {job.label}: failed: `{lines[-1] if lines else ''}`")
        elif found.get("abandoned") or found.get("reconnects") or found.get("connect_error_count"):
            notes.append(
                f"- {job.label}: {found.get('abandoned', 0)} sends given up, "
                f"{found.get('connect_error_count', 0)} connect errors, {found.get('reconnects', 0)} SDK "
                "reconnects."
            )
        for node, log in sorted(found.get("node_logs", {}).items()):
            if log["warnings"] or log["errors"] or log["tracebacks"]:
                samples = "; ".join(f"`{s[:200]}`" for s in log["samples"][:2])
                notes.append(
                    f"- {job.label}: {node} logged {log['warnings']} warnings, {log['errors']} errors, "
                    f"{log['tracebacks']} tracebacks; first: {samples}"
                )
    if not notes:
        return ["The nodes logged no warning or error during these jobs.", ""]
    return ["What else happened (node logs are in the work directory, `--keep-work`):", "", *notes, ""]


def _profile_rows(prof: dict[str, Any], key: str) -> list[tuple[str, float]]:
    rows = [(r["name"].replace("|", "/"), r["share"]) for r in prof.get(key, [])]
    if key == "inclusive":
        # Older stored profiles kept the event-loop plumbing that is in every stack (~100 %).
        rows = [r for r in rows if r[0].split(" (", 1)[0].rsplit(".", 1)[-1] not in LOOP_FRAMES]
    return rows


def _profile_label(data: dict[str, Any]) -> str:
    load_rate = data.get("delivered_per_sec") or data.get("load", {}).get("delivered_per_sec")
    return (
        f"{data.get('rate', 0):g} msg/s offered, {_fmt(load_rate)} delivered, server busy "
        f"{data.get('busy_share', math.nan):.0%} of one core"
    )


def _side_by_side(before: dict[str, Any] | None, after: dict[str, Any], key: str) -> list[str]:
    """Rank by rank: the before run's function and share next to this run's."""
    left = _profile_rows(before, key) if before else []
    right = _profile_rows(after, key)
    rows = []
    for rank in range(max(len(left), len(right))):
        b = left[rank] if rank < len(left) else ("", math.nan)
        a = right[rank] if rank < len(right) else ("", math.nan)
        rows.append((rank + 1, b[0], _pct(b[1]), a[0], _pct(a[1])))
    return _table(("#", "before: function", "share", "after (this run): function", "share"), rows)


def _profile_section(prof: dict[str, Any], before: dict[str, Any] | None) -> list[str]:
    if not prof:
        return []
    md = [
        "## Where the server's time goes (py-spy), before and after",
        "",
        f"py-spy sampled the server process at 200 Hz while the 1:1 chat ran at {prof.get('rate', 0):g} "
        "msg/s offered. Shares are of the samples in which the server was running Python (idle time is "
        "not sampled).",
        "",
    ]
    if "error" in prof:
        return [*md, prof["error"], ""]
    if before:
        what = before.get("label") or "an earlier run: original dedup query and counter upserts"
        md += [
            f"- **before** the performance work ({what}; stored in `bench/results/profile-before.json`, "
            "written by `--profile-label before`): " + _profile_label(before),
            "- **after**, this run: " + _profile_label(prof),
            "",
        ]
    else:
        md += [f"This run: {_profile_label(prof)} (no stored before profile was found).", ""]
    layers_before = dict(_profile_rows(before, "layers")) if before else {}
    layers_after = dict(_profile_rows(prof, "layers"))
    names = sorted(
        set(layers_before) | set(layers_after),
        key=lambda n: -max(layers_after.get(n, 0.0), layers_before.get(n, 0.0)),
    )
    md += ["By layer (a sample counts for the innermost frame of a known package):", ""]
    md += _table(
        ("layer", "before", "after (this run)"),
        [(n, _pct(layers_before.get(n, math.nan)), _pct(layers_after.get(n, math.nan))) for n in names],
    )
    md += ["Top functions by own time:", "", *_side_by_side(before, prof, "self")]
    md += [
        "Top functions including callees (event-loop plumbing left out):",
        "",
        *_side_by_side(before, prof, "inclusive"),
    ]
    store = prof.get("store")
    if store:
        rows = [
            (name, _pct(share))
            for name, share in _profile_rows(store, "inclusive")
            if "secantus/" in name and not name.startswith(("SecantusDBServer._handle_client", "dispatch"))
        ]
        md += [
            f"### The store (SecantusDB) at the same time: {store['busy_share']:.0%} of one core sampled "
            "(its threads, including those waiting in recv)",
            "",
        ]
        md += _table(("store function (including callees)", "share"), rows)
    return md


def _durations_section(results: dict[str, Any]) -> list[str]:
    """Wall-clock seconds per part: the whole run is meant to take under ~10 minutes."""
    parts = results.get("part_secs", {})
    if not parts:
        return []
    total = results.get("wall_secs", sum(parts.values()))
    md = ["## Where the run's time went", ""]
    rows = [(label, secs, f"{secs / max(1e-9, total):.0%}") for label, secs in parts.items()]
    return md + _table(("part", "seconds", "share"), [*rows, ("whole run", total, "100%")])


def _method(sizes: dict[str, Any]) -> list[str]:
    return [
        "## How it was measured",
        "",
        "- Processes: SecantusDB (the embedded store, fresh data directory, fsync at commit as the server "
        "runs it); the server under test as `python server.py` with `IM_MONGO_URL` pointing at that store; "
        "the baseline servers (`bench/bare_tornado.py`, `bench/sio_server.py`) one at a time; each load "
        "generator (`bench/loadgen.py`) in its own process and event loop.",
        "- Ours is measured through the project's SDK (`imclient`): WebSocket (msgpack) for two of three "
        "clients, HTTP long-poll for the rest; notify, then pull, then ack. Its messages are durable "
        "(`w: majority, j: true`) before the sender's receipt. The baselines push the body directly "
        "(no storage, no seq, no auth) over WebSocket.",
        "- Accounts are created with the domain's `UserStore.create` and tokens minted with the server's "
        "secret, because every REST login costs a scrypt hash (~50 ms of CPU by design).",
        "- The abuse limits (per-address and per-user rates, connections per user) are off for the run: one "
        "address plays every user.",
        "- Scale-out (`bench/cluster.py`, load from `bench/closedloop.py`): one node, then two nodes "
        "sharing the run's store and a `redis-server` started for the part (no nginx: each client talks "
        "to its node directly); closed-loop REST senders and SDK receivers in one load-generator process.",
        "- REST senders (`bench/rest.py`, load from `bench/restload.py`): one node, then bare Tornado; one "
        "load-generator process per receiver transport holds the receivers, the SDK senders and the REST "
        "senders' connections; CPU, store opcounters and the server's `epoll_wait` calls (`perf stat`) "
        "are read around each round.",
        f"- Sizes: `{json.dumps(sizes)}`. Change any with its flag (`python -m bench.run --help`).",
        "",
    ]


def _plots(results: dict[str, Any], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names: list[str] = []
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in TARGETS:
        steps = _steps(results, key)
        if not steps:
            continue
        rates = [s["rate"] for s in steps]
        left.plot(rates, [s["latency"]["p50_ms"] for s in steps], marker="o", label=f"{label} p50")
        left.plot(
            rates, [s["latency"]["p99_ms"] for s in steps], marker="x", linestyle="--", label=f"{label} p99"
        )
        right.plot(rates, [s["delivered_per_sec"] for s in steps], marker="o", label=label)
    left.set(
        xscale="log",
        yscale="log",
        xlabel="offered msg/s",
        ylabel="end-to-end latency (ms)",
        title="1:1 chat latency",
    )
    left.axhline(P99_TARGET_MS, color="grey", linewidth=0.8, linestyle=":")
    right.set(
        xscale="log",
        yscale="log",
        xlabel="offered msg/s",
        ylabel="delivered msg/s",
        title="1:1 chat throughput",
    )
    raw = results.get("store_raw", {}).get("SecantusDB", {}).get("insert_one_per_sec")
    if raw:
        right.axhline(raw, color="grey", linewidth=0.8, linestyle=":", label="store raw insert_one/s")
    left.legend(fontsize=7)
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "chat.png", dpi=80)
    plt.close(fig)
    names.append("chat.png")

    timeline = results.get("timeline", [])
    if timeline:
        fig, (cpu, mem) = plt.subplots(2, 1, figsize=(10, 5), sharex=True)
        t = [row["t"] for row in timeline]
        present = {key.rsplit("_", 1)[0] for row in timeline for key in row if key.endswith("_cpu")}
        for name in [n for n in ("server", "store", "node1", "node2", "redis") if n in present]:
            cpu.plot(t, [row.get(f"{name}_cpu", math.nan) for row in timeline], label=f"{name} CPU (cores)")
            mem.plot(
                t, [row.get(f"{name}_rss_kb", math.nan) / 1024 for row in timeline], label=f"{name} RSS MB"
            )
        cpu.legend(fontsize=7)
        mem.legend(fontsize=7)
        mem.set_xlabel("seconds into the run")
        _shade_phases(cpu, timeline)
        fig.tight_layout()
        fig.savefig(out / "timeline.png", dpi=80)
        plt.close(fig)
        names.append("timeline.png")
    return names


def _shade_phases(axis: Any, timeline: list[dict[str, Any]]) -> None:
    start, phase = timeline[0]["t"], timeline[0]["phase"]
    for row in [*timeline[1:], {"t": timeline[-1]["t"], "phase": None}]:
        if row["phase"] != phase:
            axis.axvline(start, color="grey", linewidth=0.5)
            axis.text(start, axis.get_ylim()[1] * 0.95, phase[:18], fontsize=5, rotation=90, va="top")
            start, phase = row["t"], row["phase"]
