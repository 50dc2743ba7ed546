// The sync client: picks the transport, switches between them, and is what the app talks to.
//
// Transport choice (the page URL's ?transport=...):
// - "longpoll": long-poll only (the restrictive-proxy case).
// - "ws": WebSocket only; it reconnects with backoff and never falls back.
// - "auto" (no parameter, the default): start on long-poll, which works through any proxy, so the first
//   messages never wait on a WebSocket that may hang. Then *detect* whether WebSocket works here: open
//   /ws, authenticate with the auth frame and get a `pong` for a `ping` within PROBE_TIMEOUT_MS. That
//   round trip fails behind proxies that refuse the upgrade (no open), close it (no auth reply) or
//   buffer it (no pong in time). On success the live socket takes over and long-poll stops; if the
//   socket later cannot be re-established 3 times in a row, the client falls back to long-poll and
//   probes again after PROBE_RETRY_MS. Both transports share one Cursor, so a page that arrives on the
//   old transport while switching is dropped as a duplicate (seq <= cursor), never shown twice.

import { Cursor } from "./sync.js";
import { LongPollTransport } from "./longpoll.js";
import { WebSocketTransport } from "./ws.js";

const PROBE_DELAY_MS = 300;
const PROBE_RETRY_MS = 60000;
const WS_FAILURES_BEFORE_FALLBACK = 3;

export function transportMode(search = location.search) {
  const value = new URLSearchParams(search).get("transport");
  return value === "ws" || value === "longpoll" ? value : "auto";
}

export class SyncClient {
  /**
   * `onEntries(entries, {catchingUp})`: new inbox entries in seq order, `catchingUp` while the pages
   * that were waiting when the client started are read; `onGap()`: reload history;
   * `onState({state, transport, detail})`: for the status pill.
   */
  constructor({ api, user, device, mode = "auto", onEntries, onGap, onState }) {
    this.api = api;
    this.mode = mode;
    this.cursor = new Cursor(user, device);
    this.onEntries = onEntries;
    this.onGap = onGap;
    this.onStateChange = onState;
    this.transport = null;
    this.probeTimer = null;
    this.stopped = false;
    this.caughtUp = false;
  }

  start() {
    if (this.mode === "ws") this.useWebSocket(null, Infinity);
    else this.useLongPoll();
    if (this.mode === "auto") this.scheduleProbe(PROBE_DELAY_MS);
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.probeTimer);
    this.transport?.stop();
    this.transport = null;
  }

  get transportName() { return this.transport?.name ?? "none"; }

  // -- transports ----------------------------------------------------------------------------------

  callbacks() {
    return {
      api: this.api,
      cursor: this.cursor,
      onPage: (result) => this.handlePage(result),
    };
  }

  useLongPoll() {
    this.transport?.stop();
    const transport = new LongPollTransport({
      ...this.callbacks(),
      onState: (state, detail) => this.reportState(transport, state, detail),
    });
    this.transport = transport;
    transport.start();
  }

  useWebSocket(probe, maxFailures) {
    this.transport?.stop();
    const transport = new WebSocketTransport({
      ...this.callbacks(),
      maxFailures,
      onState: (state, detail) => this.reportState(transport, state, detail),
      onGiveUp: () => {
        if (this.stopped || this.transport !== transport) return;
        this.useLongPoll();
        this.scheduleProbe(PROBE_RETRY_MS);
      },
    });
    this.transport = transport;
    transport.start(probe);
  }

  scheduleProbe(delayMs) {
    clearTimeout(this.probeTimer);
    this.probeTimer = setTimeout(() => this.probe(), delayMs);
  }

  async probe() {
    if (this.stopped || this.transport?.name === "ws") return;
    try {
      const socket = await WebSocketTransport.probe({ api: this.api });
      if (this.stopped || this.transport?.name === "ws") { socket.close(); return; }
      this.useWebSocket(socket, WS_FAILURES_BEFORE_FALLBACK);
    } catch {
      if (!this.stopped) this.scheduleProbe(PROBE_RETRY_MS);
    }
  }

  reportState(transport, state, detail) {
    if (transport !== this.transport) return; // a transport being replaced
    this.onStateChange?.({ state, transport: transport.name, detail });
  }

  handlePage({ fresh, gap, again }) {
    if (gap) this.onGap?.();
    if (fresh.length) this.onEntries(fresh, { catchingUp: !this.caughtUp });
    if (!again) this.caughtUp = true;
    else this.transport?.nudge();
  }

  // -- requests ------------------------------------------------------------------------------------

  /** Send one message ({to, body, client_msg_id, kind?}) on the current transport; returns the receipt. */
  async send(message) {
    const transport = this.transport;
    if (transport?.name === "ws" && transport.connected) {
      const receipt = await transport.send(message);
      return receipt;
    }
    return this.api.post("/api/v1/messages", message, { timeoutMs: 15000 });
  }

  /** A WebSocket frame when the socket is up, else null (the caller uses REST or skips). */
  async frame(frame) {
    const transport = this.transport;
    if (transport?.name === "ws" && transport.connected) return transport.request(frame);
    return null;
  }
}
