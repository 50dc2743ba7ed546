"""The report's "REST senders" section and its rows of the targets table (``bench/rest.py``'s results).

Why a module of its own: report.py is long; this part's figures (REST next to SDK per offered rate,
the closed loop against bare Tornado, what each round cost the server and the store) are read and
judged together, and only here.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from bench.markdown import fmt, met, pct, table, times
from bench.stats import ratio

__all__ = ["rest_headline", "rest_section", "rest_summary_rows"]

# The targets for API callers.
RECEIPT_RATIO_TARGET = 1.5  # REST send -> receipt p50 <= this x the SDK's send -> sent p50, same rate
CLOSED_LOOP_TARGET = 1000.0  # msg/s delivered by the closed loop of REST senders
BARE_RATIO_TARGET = 0.5  # the closed loop's msg/s >= this x bare Tornado's doing the same job
RECEIVERS = (("ws", "WebSocket"), ("longpoll", "long-poll"))
BARE_JOBS = ("bare", "bare_after")
STORE_COMMANDS = ("insert", "query", "update", "delete", "command")
PROFILE_TOP = 12


def _jobs(results: dict[str, Any]) -> dict[str, Any]:
    return results.get("rest", {}).get("jobs", {})


def _p50(round_: dict[str, Any] | None, key: str = "receipt") -> float:
    return round_.get(key, {}).get("p50_ms", math.nan) if round_ else math.nan


def _rounds(results: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(job label, round label, round) of every measured round, in the order they ran."""
    for key, job in _jobs(results).items():
        label = job.get("label", key)
        for step in job.get("paced", []):
            for kind in ("rest", "sdk"):
                if kind in step:
                    yield label, f"{kind.upper()} paced at {step['rate']:g} msg/s", step[kind]
        if "closed" in job:
            yield label, "REST closed loop", job["closed"]
        if "profiled" in job:
            yield label, "REST closed loop under py-spy", job["profiled"]


def rest_headline(results: dict[str, Any]) -> dict[str, Any]:
    """The figures the issue sets targets for: REST/SDK receipt p50 per rate and receivers, the closed
    loop's msg/s and its ratio to bare Tornado, and lost / duplicated / reordered over every round."""
    jobs = _jobs(results)
    figures: dict[str, Any] = {"rates": results.get("rest", {}).get("sizes", {}).get("rates", [])}
    for transport, _ in RECEIVERS:
        job = jobs.get(transport, {})
        for step in job.get("paced", []):
            figures[f"receipt_ratio_{transport}_{step['rate']:g}"] = ratio(
                _p50(step.get("rest")), _p50(step.get("sdk")))
        figures[f"closed_{transport}"] = job.get("closed", {}).get("delivered_per_sec", math.nan)
    # Bare Tornado ran before and after ours: ours is compared with the mean of the two.
    bare = [jobs[key]["closed"]["delivered_per_sec"] for key in BARE_JOBS if "closed" in jobs.get(key, {})]
    figures["closed_bare_runs"] = bare
    figures["closed_bare"] = sum(bare) / len(bare) if bare else math.nan
    figures["bare_ratio"] = ratio(figures["closed_ws"], figures["closed_bare"])
    rounds = [r for _, _, r in _rounds(results)]
    for what in ("lost", "duplicated", "reordered"):
        figures[what] = sum(r[what] for r in rounds) if rounds else math.nan
    figures["senders"] = results.get("rest", {}).get("sizes", {}).get("senders", "?")
    return figures


def _ok(value: float, target: float, *, at_most: bool = False) -> bool | None:
    if math.isnan(value):
        return None
    return value <= target if at_most else value >= target


def _all_ok(checks: list[bool | None]) -> bool | None:
    measured = [c for c in checks if c is not None]
    return all(measured) if measured else None


def rest_summary_rows(results: dict[str, Any]) -> list[tuple[Any, ...]]:
    """The part's rows of the targets table: (what, this run, target, met)."""
    h = rest_headline(results)
    rows: list[tuple[Any, ...]] = []
    for rate in h["rates"]:
        values = [h.get(f"receipt_ratio_{t}_{rate:g}", math.nan) for t, _ in RECEIVERS]
        rows.append((
            f"REST send -> receipt p50 / SDK send -> `sent` p50 at {rate:g} msg/s offered "
            "(WebSocket / long-poll receivers)",
            " / ".join(times(v) for v in values),
            f"<= {RECEIPT_RATIO_TARGET:g}x",
            met(_all_ok([_ok(v, RECEIPT_RATIO_TARGET, at_most=True) for v in values])),
        ))
    closed = [h[f"closed_{t}"] for t, _ in RECEIVERS]
    rows.append((
        f"closed loop of {h['senders']} REST senders, delivered msg/s (WebSocket / long-poll receivers)",
        " / ".join(fmt(v) for v in closed),
        f">= {CLOSED_LOOP_TARGET:,.0f}",
        met(_all_ok([_ok(v, CLOSED_LOOP_TARGET) for v in closed])),
    ))
    rows.append((
        "closed loop of REST senders, ours / bare Tornado with no storage (WebSocket receivers)",
        f"{times(h['bare_ratio'])} ({fmt(h['closed_ws'])} / {fmt(h['closed_bare'])} msg/s, the mean of "
        f"bare Tornado's {' and '.join(fmt(v) for v in h['closed_bare_runs']) or 'n/a'} before and after)",
        f">= {BARE_RATIO_TARGET:g}x",
        met(_ok(h["bare_ratio"], BARE_RATIO_TARGET)),
    ))
    counts = [h["lost"], h["duplicated"], h["reordered"]]
    rows.append((
        "REST part, every round: lost / duplicated / reordered",
        " / ".join(fmt(c) for c in counts),
        "0",
        met(None if any(math.isnan(c) for c in counts) else all(c == 0 for c in counts)),
    ))
    return rows


def _not_receipts(round_: dict[str, Any]) -> str:
    """Answers that were not receipts, by HTTP status ("no answer": refused, reset, timed out; an
    exception's name for the SDK), e.g. ``503: 4``; "none"."""
    found = round_.get("non_2xx", {})
    return ", ".join(f"{k}: {v:,}" for k, v in sorted(found.items())) if found else "none"


def _delivery(round_: dict[str, Any]) -> tuple[Any, ...]:
    receipt, latency = round_["receipt"], round_["latency"]
    return (round_["delivered_per_sec"], receipt["p50_ms"], receipt["p99_ms"], latency["p50_ms"],
            latency["p99_ms"], round_["lost"], round_["duplicated"], round_["reordered"],
            _not_receipts(round_))


DELIVERY_HEADERS = ("delivered msg/s", "receipt p50 ms", "receipt p99 ms", "e2e p50 ms", "e2e p99 ms",
                    "lost", "duplicated", "reordered", "not receipts")


def cpu_ms_per_message(round_: dict[str, Any]) -> float:
    """Server + store CPU per delivered message, ms (the bare baseline has no store)."""
    cpu = round_.get("cpu_secs", {})
    if "server" not in cpu or not round_.get("delivered"):
        return math.nan
    return (cpu["server"] + cpu.get("store", 0.0)) * 1000 / round_["delivered"]


def _store_commands(round_: dict[str, Any]) -> str:
    per = round_.get("store_commands_per_send", {})
    if not per:
        return "none"
    parts = [f"{kind} {per[kind]:.2f}" for kind in STORE_COMMANDS if per.get(kind)]
    return f"{sum(per.values()):.2f} ({', '.join(parts)})"


def _paced_tables(results: dict[str, Any]) -> list[str]:
    jobs = _jobs(results)
    rows, ratio_rows = [], []
    for transport, label in RECEIVERS:
        for step in jobs.get(transport, {}).get("paced", []):
            for kind, name in (("rest", "REST"), ("sdk", "SDK (WebSocket)")):
                found = step.get(kind)
                if found:
                    rows.append((label, step["rate"], name, found["sent_per_sec"], found["late_sends"],
                                 found["acked"], found["delivered"], *_delivery(found)))
            rest, sdk = step.get("rest"), step.get("sdk")
            value = ratio(_p50(rest), _p50(sdk))
            ratio_rows.append((label, step["rate"], _p50(rest), _p50(sdk), times(value),
                               met(_ok(value, RECEIPT_RATIO_TARGET, at_most=True)),
                               rest["receipt"]["p99_ms"] if rest else math.nan,
                               sdk["receipt"]["p99_ms"] if sdk else math.nan))
    if not rows:
        return []
    md = ["### Paced: the same offered rate from REST senders and from SDK senders", ""]
    md += table(("receivers", "offered msg/s", "senders", "sent/s", "late sends", "sends acked", "delivered",
                 *DELIVERY_HEADERS), rows)
    md += [f"REST send -> receipt against the SDK's send -> `sent`, same receivers, same offered rate "
           f"(target: REST p50 <= {RECEIPT_RATIO_TARGET:g}x the SDK's):", ""]
    md += table(("receivers", "offered msg/s", "REST receipt p50 ms", "SDK sent p50 ms", "REST / SDK",
                 "met", "REST receipt p99 ms", "SDK sent p99 ms"), ratio_rows)
    return md


def _closed_table(results: dict[str, Any]) -> list[str]:
    rows = []
    for key, job in _jobs(results).items():
        for round_key, what in (("closed", ""), ("profiled", ", under py-spy")):
            found = job.get(round_key)
            if found:
                label = job.get("label", key) + what
                rows.append((label, found["acked"], found["delivered"], *_delivery(found)))
    if not rows:
        return []
    h = rest_headline(results)
    md = [f"### Closed loop: {h['senders']} REST senders, each sending its next message when the previous "
          "receipt came back", ""]
    md += table(("job", "sends acked", "delivered", *DELIVERY_HEADERS), rows)
    md += [
        f"Ours / bare Tornado, WebSocket receivers: {times(h['bare_ratio'])} against the mean of bare "
        f"Tornado's runs before and after ours ({fmt(h['closed_bare'])} msg/s; target >= "
        f"{BARE_RATIO_TARGET:g}x: {met(_ok(h['bare_ratio'], BARE_RATIO_TARGET))}); ours delivered "
        f"{fmt(h['closed_ws'])} and {fmt(h['closed_longpoll'])} msg/s with WebSocket and long-poll "
        f"receivers (target >= {CLOSED_LOOP_TARGET:,.0f}: "
        f"{met(_all_ok([_ok(h[f'closed_{t}'], CLOSED_LOOP_TARGET) for t, _ in RECEIVERS]))}). The round "
        "under py-spy is there for the profile below; its figures are not the closed loop's (the sampler "
        "shares the cores).",
        "",
    ]
    return md


def _cost_table(results: dict[str, Any]) -> list[str]:
    rows = []
    for job_label, round_label, found in _rounds(results):
        cpu = found.get("cpu_secs", {})
        rows.append((job_label, round_label, found["delivered"], fmt(cpu.get("server", math.nan), 2),
                     fmt(cpu.get("store", math.nan), 2), fmt(cpu_ms_per_message(found), 2),
                     _store_commands(found), found.get("loop_turns_per_send"),
                     f"{found.get('loadgen_cpu_share', math.nan):.0%}"))
    if not rows:
        return []
    md = [
        "### What each round cost the server and the store",
        "",
        "CPU seconds of the server and of the store over the round's own windows (each from its first "
        "send until every message it acknowledged was delivered; a paced rate's slices of one kind), "
        "and per delivered message. Store commands per "
        "acknowledged send: SecantusDB's `serverStatus` opcounters around the round (a bulk insert is "
        "one command however many documents it holds, so a group-commit batch shares one insert among "
        "its messages; acks, pulls and trims of the receivers are in the figure too). Loop turns per "
        "send: the server's `epoll_wait` calls over the round, counted by the kernel (`perf stat`, "
        "`bench/loopturns.py`) / acknowledged sends; every turn of the whole job is in it, the "
        "receivers' notify, pull and ack included, and a loop that is busier makes fewer turns per "
        "message (each turn finds more ready).",
        "",
    ]
    md += table(("job", "round", "delivered", "server CPU s", "store CPU s", "server + store CPU ms / msg",
                 "store commands / send", "loop turns / send", "loadgen CPU"), rows)
    idle = [(job.get("label", key), job["idle"]) for key, job in _jobs(results).items() if "idle" in job]
    if idle:
        md += ["The same servers with every client connected and nothing sent (1 s, before the rounds): the "
               "pace of their timers and pings, which is in every round's figures too: " + "; ".join(
                   f"{label}: {fmt(found.get('loop_turns_per_sec'), 0)} loop turns/s, server "
                   f"{fmt(found.get('cpu_secs', {}).get('server', math.nan) / found['secs'], 2)} cores"
                   for label, found in idle) + ".", ""]
    errors = sorted({f.get("loop_turns_error", "") for _, _, f in _rounds(results)} - {""})
    if errors:
        md += ["Loop turns not measured: " + "; ".join(f"`{e}`" for e in errors) + ".", ""]
    return md


def _profile_rows(prof: dict[str, Any], key: str) -> list[tuple[str, str]]:
    return [(r["name"].replace("|", "/"), pct(r["share"])) for r in prof.get(key, [])][:PROFILE_TOP]


def _profile_section(results: dict[str, Any]) -> list[str]:
    prof = results.get("rest", {}).get("profile")
    if not prof:
        return []
    load = prof.get("load", {})
    md = [
        "### Where a REST send's time goes (py-spy on the server during the closed loop)",
        "",
        f"py-spy sampled the server at 200 Hz for {fmt(prof.get('secs'), 0)} s of a closed loop of REST "
        f"senders with WebSocket receivers ({fmt(load.get('delivered_per_sec'))} msg/s delivered while "
        f"sampled, receipt p50 {fmt(_p50(load))} ms). Shares are of the samples in which the server ran "
        "Python (idle time is not sampled); the whole job is in them, the receivers' pulls and acks too.",
        "",
    ]
    if "error" in prof:
        return [*md, prof["error"], ""]
    md += [f"The server was busy {prof['busy_share']:.0%} of one core. By layer (a sample counts for the "
           "innermost frame of a known package):", ""]
    md += table(("layer", "share"), _profile_rows(prof, "layers"))
    md += ["Top functions by own time:", ""]
    md += table(("function", "share"), _profile_rows(prof, "self"))
    md += ["Top functions including callees (event-loop plumbing left out):", ""]
    md += table(("function", "share"), _profile_rows(prof, "inclusive"))
    store = prof.get("store")
    if store:
        # The store's own functions, without the per-connection loop that is in every stack.
        plumbing = ("SecantusDBServer._handle_client", "dispatch")
        rows = [(name, share) for name, share in _profile_rows(store, "inclusive")
                if "secantus/" in name and not name.startswith(plumbing)]
        md += [f"The store at the same time: {store['busy_share']:.0%} of one core sampled (its threads, "
               "including those waiting in recv).", ""]
        md += table(("store function (including callees)", "share"), rows)
    return md


def _notes(results: dict[str, Any]) -> list[str]:
    notes = []
    for key, job in _jobs(results).items():
        label = job.get("label", key)
        if "error" in job:
            lines = job["error"].strip().splitlines()
            notes.append(f"- {label}: failed: `{lines[-1] if lines else ''}`")
            continue
        abandoned = sum(r.get("abandoned", 0) for j, _, r in _rounds(results) if j == label)
        if abandoned or job.get("reconnects") or job.get("connect_error_count") or job.get("foreign"):
            notes.append(f"- {label}: {abandoned} sends given up, {job.get('connect_error_count', 0)} "
                         f"connect errors, {job.get('reconnects', 0)} SDK reconnects, "
                         f"{job.get('foreign', 0)} messages of no round.")
    return ["What else happened:", "", *notes, ""] if notes else []


def rest_section(results: dict[str, Any]) -> list[str]:
    part = results.get("rest")
    if not part:
        return []
    sizes = part.get("sizes", {})
    md = [
        "## REST senders (API callers) next to the SDK",
        "",
        f"One node (`python server.py`, as `make run` starts it; rate limits off as in every part). "
        f"{sizes.get('senders', '?')} REST senders POST one-to-one messages (`POST /api/v1/messages`, a "
        f"JWT each, one kept-alive connection each, one request at a time), and as many SDK senders send "
        f"over their WebSocket; sender i of either kind sends to receiver i, one of "
        f"{sizes.get('senders', '?')} SDK clients online over WebSocket, then (another job, fresh "
        "accounts) over long-poll, each acknowledging what it receives. Paced: the senders of one kind "
        f"offer a rate in all for {fmt(sizes.get('step_secs'), 0)} s, each send at its scheduled time or, "
        "if its sender still waits for the previous receipt, as soon as it came (`late sends`; `sent/s` "
        "is the rate really offered); at each rate REST and SDK take turns in 1 s slices (REST, SDK, SDK, "
        "REST ...), each slice ending when what it acknowledged was delivered, so the machine's other "
        "work falls on both alike; `delivered msg/s` is over a kind's own slices. Closed loop: "
        f"{sizes.get('messages', '?')} messages per REST sender, each sent when the previous receipt came "
        "back; the same job against `bench/bare_tornado.py`'s `POST /api/v1/messages` (push to the "
        "receiver's WebSocket, answer a receipt; no storage, no auth), run before and after ours, is the "
        "ceiling of the framework. "
        "`receipt`: POST (or the SDK's send call) -> receipt (the SDK's `sent` frame), retries included; "
        "`e2e`: the send time written in the body -> the receiver's callback. `lost`, `duplicated`, "
        "`reordered` as in the scale-out part (per sender, acknowledged sends only). Everything ran on "
        "this one machine at once: the load generator's CPU is in every figure.",
        "",
    ]
    md += _paced_tables(results)
    md += _closed_table(results)
    md += _cost_table(results)
    md += _profile_section(results)
    md += _notes(results)
    return md
