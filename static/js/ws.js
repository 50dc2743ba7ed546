// WebSocket transport: JSON text frames on /ws (auth frame first, since browsers cannot set headers).
//
// The server only ever pushes a body-less `notify {seq}`; the client answers with `pull {after}`,
// applies the `msgs` page through the shared Cursor and then sends `ack {upto}`. A `ping` every
// PING_EVERY_MS that is not answered within PONG_WAIT_MS means a dead path (a proxy that silently
// dropped the socket): close and reconnect. Notifies are only hints, so it also re-pulls every
// RECHECK_MS in case one was lost.

import { ApiError } from "./api.js";
import { backoffMs, sleep } from "./util.js";

const PING_EVERY_MS = 25000;
const PONG_WAIT_MS = 10000;
const RECHECK_MS = 30000;
const REQUEST_TIMEOUT_MS = 15000;
export const PROBE_TIMEOUT_MS = 5000;

export function wsUrl() {
  const url = new URL("/ws", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  return url.href;
}

// Error frames carry the same codes as the REST errors; map them to the HTTP status REST would give,
// so the outbox decides "retry or give up" the same way on both transports.
const AUTH_CODES = new Set(["unauthorized", "unauthenticated", "missing_token", "invalid_token",
  "token_expired", "token_revoked"]);
const RETRY_CODES = { rate_limited: 429, store_unavailable: 503, too_many_connections: 429 };

function frameStatus(code) {
  if (AUTH_CODES.has(code)) return 401;
  return RETRY_CODES[code] ?? 400;
}

/** One authenticated socket; `open()` resolves once the server answered the auth frame. */
class Socket {
  constructor({ token, onFrame, onClose }) {
    this.token = token;
    this.onFrame = onFrame;
    this.onClose = onClose;
    this.pending = new Map(); // rid -> {resolve, reject, timer}
    this.nextRid = 1;
    this.ws = null;
    this.closed = false;
  }

  open(timeoutMs) {
    return new Promise((resolve, reject) => {
      let ws;
      try {
        ws = this.ws = new WebSocket(wsUrl());
      } catch (error) {
        reject(new ApiError(0, "ws_unavailable", String(error)));
        return;
      }
      const timer = setTimeout(() => { reject(new ApiError(0, "ws_timeout", "WebSocket did not open")); this.close(); },
        timeoutMs);
      ws.onopen = () => {
        this.request({ t: "auth", token: this.token }, timeoutMs).then((frame) => {
          clearTimeout(timer);
          resolve(frame);
        }, (error) => { clearTimeout(timer); reject(error); this.close(); });
      };
      ws.onmessage = (event) => this.receive(event.data);
      ws.onerror = () => {}; // onclose follows with the details we need
      ws.onclose = (event) => {
        clearTimeout(timer);
        this.closed = true;
        for (const { reject: fail, timer: t } of this.pending.values()) {
          clearTimeout(t);
          fail(new ApiError(0, "ws_closed", "connection closed"));
        }
        this.pending.clear();
        reject(new ApiError(0, "ws_closed", `WebSocket closed (${event.code})`));
        this.onClose?.(event);
      };
    });
  }

  receive(data) {
    let frame;
    try { frame = JSON.parse(data); } catch { return; }
    if (frame.rid !== undefined && this.pending.has(frame.rid)) {
      const { resolve, reject, timer } = this.pending.get(frame.rid);
      this.pending.delete(frame.rid);
      clearTimeout(timer);
      if (frame.t === "error") {
        reject(new ApiError(frameStatus(frame.code), frame.code, frame.message, frame.field, frame.retry_after_secs));
      } else {
        resolve(frame);
      }
      return;
    }
    this.onFrame(frame);
  }

  /** Send a frame with a fresh rid and wait for the reply carrying it. */
  request(frame, timeoutMs = REQUEST_TIMEOUT_MS) {
    return new Promise((resolve, reject) => {
      if (!this.ws || this.ws.readyState !== WebSocket.OPEN) {
        reject(new ApiError(0, "ws_closed", "not connected"));
        return;
      }
      const rid = this.nextRid++;
      const timer = setTimeout(() => {
        this.pending.delete(rid);
        reject(new ApiError(0, "timeout", "no reply in time"));
        this.close(); // a reply that never comes means the path is broken
      }, timeoutMs);
      this.pending.set(rid, { resolve, reject, timer });
      this.ws.send(JSON.stringify({ ...frame, rid }));
    });
  }

  close(code = 1000) {
    if (this.ws && this.ws.readyState <= WebSocket.OPEN) this.ws.close(code);
  }
}

export class WebSocketTransport {
  /**
   * Same callbacks as LongPollTransport. `onGiveUp()` runs when the socket cannot be (re)established
   * `maxFailures` times in a row (auto mode falls back to long-poll then; forced ws keeps trying).
   */
  constructor({ api, cursor, onPage, onState, onGiveUp = null, maxFailures = Infinity }) {
    this.name = "ws";
    this.api = api;
    this.cursor = cursor;
    this.onPage = onPage;
    this.onState = onState;
    this.onGiveUp = onGiveUp;
    this.maxFailures = maxFailures;
    this.socket = null;
    this.controller = null;
    this.pulling = false;
    this.dirty = false;
    this.timers = [];
  }

  get running() { return this.controller !== null; }
  get connected() { return this.socket !== null && !this.socket.closed; }

  /** Start with an already authenticated socket (from a probe) or connect a new one. */
  start(probe = null) {
    if (this.controller) return;
    this.controller = new AbortController();
    this.run(this.controller.signal, probe);
  }

  stop() {
    this.controller?.abort();
    this.controller = null;
    this.clearTimers();
    this.socket?.close();
    this.socket = null;
  }

  /** Open and authenticate a socket without starting to sync; used to test that WebSocket works here. */
  static async probe({ api, timeoutMs = PROBE_TIMEOUT_MS }) {
    const socket = new Socket({ token: api.token, onFrame: () => {} });
    await socket.open(timeoutMs);
    await socket.request({ t: "ping" }, timeoutMs); // a proxy that buffers frames fails here
    return socket;
  }

  async run(signal, probe) {
    let failures = 0;
    while (!signal.aborted) {
      this.onState("connecting");
      let closed;
      const closedPromise = new Promise((resolve) => { closed = resolve; });
      try {
        let socket = probe;
        probe = null;
        if (socket && !socket.closed) {
          socket.onClose = closed;
        } else {
          socket = new Socket({ token: this.api.token, onFrame: null, onClose: closed });
          socket.onFrame = (frame) => this.onFrame(frame);
          await socket.open(REQUEST_TIMEOUT_MS);
        }
        socket.onFrame = (frame) => this.onFrame(frame);
        if (signal.aborted) { socket.close(); return; }
        this.socket = socket;
        failures = 0;
        this.onState("live");
        this.startTimers(socket);
        this.pull();
        const event = await closedPromise;
        this.clearTimers();
        this.socket = null;
        if (signal.aborted) return;
        if (event?.code === 4409) { this.onState("kicked", "this session was replaced by a newer login"); this.stop(); return; }
        if (event?.code === 4401) { this.onState("unauthorized", "session expired"); this.stop(); return; }
      } catch (error) {
        if (signal.aborted) return;
        if (error instanceof ApiError && error.status === 401) {
          this.onState("unauthorized", error.message);
          this.stop();
          return;
        }
        failures += 1;
        if (failures >= this.maxFailures && this.onGiveUp) {
          this.stop();
          this.onGiveUp(error);
          return;
        }
      }
      this.onState("offline", "reconnecting");
      try { await sleep(backoffMs(failures), signal); } catch { return; }
    }
  }

  startTimers(socket) {
    this.timers.push(setInterval(() => {
      socket.request({ t: "ping" }, PONG_WAIT_MS).catch(() => socket.close(4000));
    }, PING_EVERY_MS));
    this.timers.push(setInterval(() => this.pull(), RECHECK_MS));
  }

  clearTimers() {
    for (const timer of this.timers) clearInterval(timer);
    this.timers = [];
  }

  onFrame(frame) {
    if (frame.t === "notify") {
      if (!Number.isInteger(frame.seq) || frame.seq > this.cursor.seq) this.pull();
    } else if (frame.t === "kicked") {
      this.onState("kicked", frame.message);
    }
  }

  nudge() { this.pull(); }

  /** Pull until the inbox is drained; a notify during a pull makes it go round once more. */
  async pull() {
    if (this.pulling) { this.dirty = true; return; }
    this.pulling = true;
    try {
      do {
        this.dirty = false;
        const socket = this.socket;
        if (!socket) return;
        const page = await socket.request({ t: "pull", after: this.cursor.seq });
        const result = this.cursor.accept(page);
        this.onPage(result);
        if (this.cursor.seq > 0 && result.fresh.length) {
          socket.request({ t: "ack", upto: this.cursor.seq }).catch(() => {});
        }
        if (result.again) this.dirty = true;
      } while (this.dirty && this.socket);
    } catch {
      // the socket is closing; the reconnect pulls again
    } finally {
      this.pulling = false;
    }
  }

  /** Send over the socket; the reply is the same receipt the REST call gives. */
  async send(message) {
    if (!this.socket) throw new ApiError(0, "ws_closed", "not connected");
    const frame = await this.socket.request({ t: "send", ...message });
    const { t, rid, ...receipt } = frame;
    return receipt;
  }

  /** Any other frame (e.g. `read`) with its reply; throws when not connected. */
  async request(frame) {
    if (!this.socket) throw new ApiError(0, "ws_closed", "not connected");
    return this.socket.request(frame);
  }
}
