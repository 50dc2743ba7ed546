"""Clients that come from a loopback address of their choosing (127.0.0.0/8 is all local on Linux), so
one machine can play an attacker at one address and other users at others, as per-address limits see
them: a blocking keep-alive client for steady users and a paced burst of requests for the attacker."""

from __future__ import annotations

import asyncio
import http.client
import json
import multiprocessing
import threading
import time
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Answer", "Burst", "LoopbackClient", "SendSample", "SenderProcess", "SteadySender", "fire_burst"]

# Status recorded for a request that got no HTTP answer at all (connection reset, closed or timed out).
NO_ANSWER = 599


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: Any


class LoopbackClient:
    """One keep-alive HTTP/1.1 connection from ``source_ip`` to a node on 127.0.0.1 (blocking)."""

    def __init__(self, port: int, source_ip: str, *, timeout_secs: float = 60.0) -> None:
        self._connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_secs,
                                                      source_address=(source_ip, 0))

    def call(self, method: str, path: str, body: Any = None, token: str | None = None) -> Answer:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        payload = None if body is None else json.dumps(body)
        try:
            self._connection.request(method, path, body=payload, headers=headers)
            response = self._connection.getresponse()
            raw = response.read()
        except (OSError, http.client.HTTPException):
            self._connection.close()
            return Answer(NO_ANSWER, {}, None)
        return Answer(response.status, dict(response.getheaders()), json.loads(raw) if raw else None)

    def user(self, name: str, password: str) -> str:
        """Register ``name`` and log it in; return its token."""
        registered = self.call("POST", "/api/v1/users", {"user": name, "password": password})
        assert registered.status == 201, registered
        login = self.call("POST", "/api/v1/tokens", {"user": name, "password": password})
        assert login.status == 201, login
        return login.body["token"]

    def close(self) -> None:
        self._connection.close()


@dataclass(frozen=True, slots=True)
class SendSample:
    started: float  # time.monotonic() when the request went out
    seconds: float
    status: int
    client_msg_id: str


class SteadySender(threading.Thread):
    """A user sending ``per_sec`` messages a second on its own connection, one at a time, in a thread
    of its own so that the attacker's event loop never delays it (what it measures is the server)."""

    def __init__(self, client: LoopbackClient, token: str, to: str, *, per_sec: float, name: str) -> None:
        super().__init__(name=f"steady-{name}", daemon=True)
        self._client = client
        self._token = token
        self._to = to
        self._interval = 1.0 / per_sec
        self._name = name
        self._stopping = threading.Event()
        self.samples: list[SendSample] = []

    def run(self) -> None:
        due = time.monotonic()
        n = 0
        while not self._stopping.is_set():
            client_msg_id = f"{self._name}-{n}"
            started = time.monotonic()
            answer = self._client.call("POST", "/api/v1/messages", token=self._token,
                                       body={"to": self._to, "body": client_msg_id, "client_msg_id": client_msg_id})
            self.samples.append(SendSample(started, time.monotonic() - started, answer.status, client_msg_id))
            n += 1
            # Never faster than per_sec (the per-user send limit), and no catching up after a stall.
            due = max(due + self._interval, time.monotonic())
            self._stopping.wait(max(0.0, due - time.monotonic()))

    def stop(self) -> None:
        self._stopping.set()
        self.join(timeout=120)
        self._client.close()


def _send_steadily(port: int, users: list[tuple[str, str]], to: str, per_sec: float,
                   stop: Any, results: Any) -> None:
    """The body of :class:`SenderProcess`: one :class:`SteadySender` per ``(source_ip, token)``."""
    senders = [SteadySender(LoopbackClient(port, ip), token, to, per_sec=per_sec, name=f"s{i}")
               for i, (ip, token) in enumerate(users)]
    for sender in senders:
        sender.start()
    stop.wait()
    for sender in senders:
        sender.stop()
    results.put([(s.started, s.seconds, s.status, s.client_msg_id) for sender in senders for s in sender.samples])


class SenderProcess:
    """Steady senders in a process of their own, so that neither the attacker's event loop nor its
    interpreter lock delays them: the latency they record is the server's (monotonic clocks are the
    system's, so their times compare with the caller's)."""

    def __init__(self, port: int, users: list[tuple[str, str]], to: str, *, per_sec: float) -> None:
        context = multiprocessing.get_context("spawn")
        self._stop = context.Event()
        self._results = context.Queue()
        self._process = context.Process(target=_send_steadily, name="steady-senders", daemon=True,
                                        args=(port, users, to, per_sec, self._stop, self._results))

    def start(self) -> SenderProcess:
        self._process.start()
        return self

    def stop(self) -> list[SendSample]:
        """Stop sending and return every send made (blocking; once: a second call returns nothing)."""
        if self._stop.is_set():
            return []
        self._stop.set()
        try:
            rows = self._results.get(timeout=180)
        finally:
            self._process.join(timeout=30)
            if self._process.is_alive():
                self._process.kill()
        return [SendSample(*row) for row in rows]


@dataclass
class Burst:
    """What a burst's requests were answered, and when it ran (monotonic seconds)."""

    started: float
    ended: float
    answers: list[Answer] = field(default_factory=list)

    def count(self, status: int) -> int:
        return sum(1 for a in self.answers if a.status == status)


async def fire_burst(port: int, requests: list[tuple[str, dict[str, Any], str]], *, per_sec: float) -> Burst:
    """POST each ``(path, body, source_ip)`` at ``per_sec`` a second, whatever the answers (an attacker
    does not wait), each on a connection of its own; return once every one is answered or gave up.

    Raw HTTP/1.1 over asyncio streams rather than an HTTP client library, so the load generator, which
    shares the machine, spends as little CPU per request as it can: what is measured is the server.
    """
    started = time.monotonic()

    async def one(index: int, path: str, body: dict[str, Any], source_ip: str) -> Answer:
        await asyncio.sleep(max(0.0, started + index / per_sec - time.monotonic()))
        return await _post_once(port, path, body, source_ip)

    answers = await asyncio.gather(*(one(i, *r) for i, r in enumerate(requests)))
    return Burst(started, time.monotonic(), list(answers))


async def _post_once(port: int, path: str, body: dict[str, Any], source_ip: str,
                     timeout_secs: float = 120.0) -> Answer:
    """One POST with ``Connection: close``; the answer is read to the end of the stream."""
    payload = json.dumps(body).encode()
    request = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n").encode() + payload
    try:
        async with asyncio.timeout(timeout_secs):
            reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source_ip, 0))
            try:
                writer.write(request)
                raw = await reader.read()
            finally:
                writer.close()
    except (OSError, TimeoutError):
        return Answer(NO_ANSWER, {}, None)
    head, _, content = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    if not status_line.startswith("HTTP/1.1 "):
        return Answer(NO_ANSWER, {}, None)  # the connection closed before a whole answer
    headers = dict(line.split(": ", 1) for line in header_lines if ": " in line)
    return Answer(int(status_line.split()[1]), headers, json.loads(content) if content else None)
