"""Turn one run's results into ``REPORT.md`` and PNG plots (matplotlib, no display needed)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from bench.stats import ratio

__all__ = ["TARGETS", "headline", "write"]

TARGETS = (("ours", "ours (durable)"), ("tornado", "bare Tornado"), ("sio", "python-socketio"))
# The targets; the report says for each whether this run met it.
DURABLE_RATIO_TARGET = 1.0
P99_TARGET_MS = 20.0
P99_TARGET_RATE = 1000.0
RSS_PER_CONN_TARGET_KB = 25.0
OP_KINDS = ("insert", "query", "update", "delete", "command")


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return [*lines, ""]


def _steps(results: dict[str, Any], key: str) -> list[dict[str, Any]]:
    return results.get(key, {}).get("chat", {}).get("steps", [])


def best_delivered(steps: Sequence[dict[str, Any]]) -> float:
    """The highest delivered msg/s of a ladder (saturated steps included: that is the ceiling)."""
    return max((s["delivered_per_sec"] for s in steps), default=math.nan)


def step_at(steps: Sequence[dict[str, Any]], rate: float) -> dict[str, Any] | None:
    return next((s for s in steps if s["rate"] == rate), None)


def headline(results: dict[str, Any]) -> dict[str, Any]:
    """The numbers the issue sets targets for, from one run."""
    ours = _steps(results, "ours")
    raw = results.get("store_raw", {}).get("SecantusDB", {})
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
        "p99_at_target_rate_ms": at_target["latency"]["p99_ms"] if at_target else math.nan,
        "rss_per_conn_kb": per_conn,
        "clients_back": bool(idle) and idle["after"]["clients"] <= idle["before"]["clients"],
        "tornado_best": best_delivered(_steps(results, "tornado")),
        "sio_best": best_delivered(_steps(results, "sio")),
    }


def write(results: dict[str, Any], out: Path, *, profile_label: str = "") -> Path:
    out.mkdir(parents=True, exist_ok=True)
    plots = _plots(results, out)
    if profile_label and "profile" in results:
        (out / f"profile-{profile_label}.json").write_text(
            json.dumps(_profile_digest(results["profile"]), indent=1) + "\n"
        )
    before = None
    before_path = out / "profile-before.json"
    if before_path.exists() and profile_label != "before":
        before = json.loads(before_path.read_text())
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
        f"Python {machine.get('python', '?')}. Every server, the store and every load generator ran on this "
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
                f"{_fmt(h['durable_ratio'], 2)}x",
                f">= {DURABLE_RATIO_TARGET:.1f}x",
                _yes(h["durable_ratio"] >= DURABLE_RATIO_TARGET),
            ),
            (
                f"end-to-end p99 at {P99_TARGET_RATE:g} msg/s (ms)",
                h["p99_at_target_rate_ms"],
                f"< {P99_TARGET_MS:g}",
                _yes(h["p99_at_target_rate_ms"] < P99_TARGET_MS),
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
                "ours / bare Tornado (best delivered msg/s)",
                f"{_fmt(ratio(h['ours_best_delivered_per_sec'], h['tornado_best']), 2)}x",
                "",
                "",
            ),
            (
                "ours / python-socketio (best delivered msg/s)",
                f"{_fmt(ratio(h['ours_best_delivered_per_sec'], h['sio_best']), 2)}x",
                "",
                "",
            ),
        ],
    )
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
    md += _profile_section(results.get("profile", {}), before)
    md += ["## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    md += _method(sizes)
    return md


def _limit_note(results: dict[str, Any]) -> list[str]:
    """What bounds our delivery rate, in this run's numbers: store operations per delivered message."""
    steps = _steps(results, "ours")
    if not steps or not steps[0].get("store_ops_per_delivery"):
        return []
    best = max(steps, key=lambda s: s["delivered_per_sec"])
    per_msg = sum(best["store_ops_per_delivery"].values())
    raw = results.get("store_raw", {}).get("SecantusDB", {}).get("insert_one_per_sec", math.nan)
    return [
        f"At its best step ours delivered {_fmt(best['delivered_per_sec'])} msg/s while the store executed "
        f"{_fmt(per_msg)} operations per delivered message ({_fmt(per_msg * best['delivered_per_sec'], 0)} "
        f"operations/s; one serial insert_one runs at {_fmt(raw)}/s on the same store). The per-message "
        "operations, most of them on the read side (pull and acknowledge of two inboxes), not the server's "
        "CPU, bound the durable rate: see the operations table and the store's profile below.",
        "",
    ]


def _yes(ok: bool) -> str:
    return "yes" if ok else "**no**"


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
    return md + _table(("store", "insert_one /s", "insert_many docs/s", "batch"), rows)


def _chat_section(results: dict[str, Any]) -> list[str]:
    md = [
        "## 1:1 chat at increasing rates",
        "",
        "Clients in pairs, each sending to its partner, open loop at the offered aggregate rate. Latency: "
        "send call -> message in the recipient's callback. `delivered/s` counts deliveries inside the "
        "sending window; a step that delivers less than 85 % of what was offered is saturated and ends "
        "the ladder. `skipped`: sends the generator did not issue because that sender already had "
        "32 unanswered (the sign of saturation, instead of an unbounded queue).",
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
                "p50 ms",
                "p90 ms",
                "p99 ms",
                "max ms",
                "receipt p50 ms",
                "lost",
                "skipped",
                "errors",
                "loadgen CPU",
            ),
            [
                (
                    s["rate"],
                    s["delivered_per_sec"],
                    s["latency"]["p50_ms"],
                    s["latency"]["p90_ms"],
                    s["latency"]["p99_ms"],
                    s["latency"]["max_ms"],
                    s["receipt"]["p50_ms"],
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
            "### Ours: store operations per delivered message (SecantusDB `serverStatus` opcounters)",
            "",
            "Around each step. A 1:1 message enters two inboxes (the recipient's and the sender's own, "
            "for the sender's other devices), so both pull and acknowledge it; the write itself is shared "
            "by the whole batch (group commit).",
            "",
        ]
        md += _table(("offered/s", *OP_KINDS, "total"), op_rows)
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
            )
        )
    if not rows:
        return []
    md = [
        "## A group",
        "",
        "Every member connected; some members send to the group; each message is delivered to every other "
        "member. `mode direct` means the server had no group API when this ran, so each group message was "
        "sent as one one-to-one message per member (same fan-out, many more writes).",
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
        ),
        rows,
    )


def _idle_section(results: dict[str, Any]) -> list[str]:
    idle = results.get("idle")
    if not idle:
        return []
    total = idle["ws"] + idle["longpoll"]
    b, ws, both, after = idle["before"], idle["with_ws"], idle["with_all"], idle["after"]
    md = [
        "## Idle connections on one server process",
        "",
        f"{idle['ws']:,} WebSocket clients connect and authenticate, then {idle['longpoll']:,} long-poll "
        "clients park a poll; server RSS (VmRSS of /proc/<pid>/status) and open descriptors are read "
        "before, after each phase and after every client left. Per connection = RSS delta / connections. "
        "Client connections: established TCP connections on the server's port (from /proc/<pid>/net/tcp); "
        "other descriptors are the store driver's pool, which grows under load and stays.",
        "",
    ]
    md += _table(
        ("phase", "server RSS MB", "descriptors", "client connections", "RSS per connection KB"),
        [
            ("before", b["rss_kb"] / 1024, b["fds"], b["clients"], ""),
            (
                f"+ {idle['ws']:,} WebSocket",
                ws["rss_kb"] / 1024,
                ws["fds"],
                ws["clients"],
                (ws["rss_kb"] - b["rss_kb"]) / max(1, idle["ws"]),
            ),
            (
                f"+ {idle['longpoll']:,} long-poll",
                both["rss_kb"] / 1024,
                both["fds"],
                both["clients"],
                (both["rss_kb"] - ws["rss_kb"]) / max(1, idle["longpoll"]),
            ),
            ("all, per connection", "", "", "", (both["rss_kb"] - b["rss_kb"]) / max(1, total)),
            ("after all left", after["rss_kb"] / 1024, after["fds"], after["clients"], ""),
        ],
    )
    md += [
        f"Connecting took {_fmt(idle['ws_connect_secs'])} s (WebSocket) and "
        f"{_fmt(idle['lp_connect_secs'])} s (long-poll); client connections were back to the baseline "
        f"within {_fmt(idle['leave_secs'])} s of the clients leaving. "
        f"Connect errors: {idle['connect_error_count']}; SDK reconnects while idle: "
        f"{idle.get('client_reconnects', 0)} ({idle.get('workers', 1)} load-generator processes held the "
        "clients). The load generators grew by "
        f"{_fmt(idle['loadgen_rss_delta_kb'] / max(1, total))} KB per client (SDK client + its socket).",
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
        "from the storm's start until the client's callback has its whole backlog.",
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
            )
        ],
    )


def _profile_rows(prof: dict[str, Any], key: str) -> list[tuple[str, str]]:
    return [(r["name"].replace("|", "/"), f"{r['share']:.1%}") for r in prof.get(key, [])]


def _profile_section(prof: dict[str, Any], before: dict[str, Any] | None) -> list[str]:
    if not prof:
        return []
    md = [
        "## Where the server's time goes (py-spy)",
        "",
        f"py-spy sampled the server process at 200 Hz while the 1:1 chat ran at {prof.get('rate', 0):g} "
        "msg/s offered. Shares are of the samples in which the server was running Python (idle time is "
        "not sampled).",
        "",
    ]
    if "error" in prof:
        return [*md, prof["error"], ""]
    before_label = "before the performance work (an earlier run: original dedup query and counter upserts)"
    for label, data in ((before_label, before), ("this run", prof)):
        if not data:
            continue
        load_rate = data.get("delivered_per_sec") or data.get("load", {}).get("delivered_per_sec")
        md += [
            f"### {label}: {data.get('rate', 0):g} msg/s offered, {_fmt(load_rate)} delivered, "
            f"server busy {data['busy_share']:.0%} of one core",
            "",
        ]
        md += ["By layer:", "", *_table(("layer", "share"), _profile_rows(data, "layers"))]
        md += ["Top functions by own time:", "", *_table(("function", "share"), _profile_rows(data, "self"))]
        md += [
            "Top functions including callees:",
            "",
            *_table(("function", "share"), _profile_rows(data, "inclusive")),
        ]
    store = prof.get("store")
    if store:
        rows = [
            r
            for r in _profile_rows(store, "inclusive")
            if "secantus/" in r[0] and not r[0].startswith(("SecantusDBServer._handle_client", "dispatch"))
        ]
        md += [
            f"### The store (SecantusDB) at the same time: {store['busy_share']:.0%} of one core sampled "
            "(its threads, including those waiting in recv)",
            "",
        ]
        md += _table(("store function (including callees)", "share"), rows)
    return md


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
        "- Accounts are created with the domain's `Store.create_user` and tokens minted with the server's "
        "secret, because every REST login costs a scrypt hash (~50 ms of CPU by design).",
        "- The abuse limits (per-address and per-user rates, connections per user) are off for the run: one "
        "address plays every user.",
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
        for name in ("server", "store"):
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
