// Long-poll transport: GET /api/v1/poll?after=K&timeout=T, which also acknowledges K.
// Plain GETs with JSON answers pass proxies that buffer responses or refuse WebSocket upgrades.

import { ApiError } from "./api.js";
import { backoffMs, isAbort, sleep } from "./util.js";

export const LONG_POLL_WAIT_SECS = 25; // below common proxy/NAT idle limits (the server's default too)
const LONG_POLL_SLACK_MS = 10000; // the HTTP timeout is the wait plus this, so a silent server is noticed

export class LongPollTransport {
  /**
   * `cursor`: the shared Cursor; `onPage(result)` gets what Cursor.accept returned;
   * `onState(state, detail)`: "connecting" | "live" | "offline" | "kicked" | "unauthorized".
   */
  constructor({ api, cursor, onPage, onState }) {
    this.name = "longpoll";
    this.api = api;
    this.cursor = cursor;
    this.onPage = onPage;
    this.onState = onState;
    this.controller = null;
  }

  get running() { return this.controller !== null; }

  start() {
    if (this.controller) return;
    this.controller = new AbortController();
    this.loop(this.controller.signal);
  }

  stop() {
    this.controller?.abort();
    this.controller = null;
  }

  /** Wake a poll that waits (e.g. after our own send, so the echo shows at once even without notify). */
  nudge() {}

  async loop(signal) {
    let failures = 0;
    let live = false;
    this.onState("connecting");
    while (!signal.aborted) {
      try {
        // The first poll (and the first after an error) asks for an answer at once: it is the
        // catch-up pull and tells the user quickly that the connection works.
        const timeout = live ? LONG_POLL_WAIT_SECS : 0;
        const page = await this.api.get("/api/v1/poll", {
          query: { after: this.cursor.seq, timeout }, signal,
          timeoutMs: timeout * 1000 + LONG_POLL_SLACK_MS,
        });
        if (signal.aborted) return;
        failures = 0;
        live = true;
        this.onState("live");
        this.onPage(this.cursor.accept(page));
      } catch (error) {
        if (isAbort(error) || signal.aborted) return;
        if (error instanceof ApiError && error.status === 409 && error.code === "kicked") {
          this.onState("kicked", error.message);
          this.stop();
          return;
        }
        if (error instanceof ApiError && error.status === 401) {
          this.onState("unauthorized", error.message);
          this.stop();
          return;
        }
        live = false;
        this.onState("offline", error.message);
        const waitMs = error.retryAfterSecs ? error.retryAfterSecs * 1000 : backoffMs(failures++);
        try { await sleep(waitMs, signal); } catch { return; }
      }
    }
  }

  /** Sends go over REST on this transport. */
  async send(message) {
    return this.api.post("/api/v1/messages", message, { timeoutMs: 15000 });
  }
}
