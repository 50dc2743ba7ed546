// Inbox sync: one seq cursor per user+device, fed by long-poll or WebSocket.
//
// The server writes first and then only *notifies* (a body-less hint); the client pulls after its
// cursor. Every page of the inbox goes through Cursor.accept(), which is where order and
// exactly-once are kept: entries with seq <= the cursor are dropped (a retried poll, a pull racing a
// notify, the long-poll still in flight while switching to WebSocket), `gap` or a new `epoch` means the
// client's cursor can no longer be served incrementally (trimmed for this device, or the inbox was
// recreated) so the app reloads history, and `more` means "pull again at once".

import { storage } from "./util.js";

export class Cursor {
  /** Persisted under im.cursor.<user>.<device>: {seq, epoch}. */
  constructor(user, device) {
    this.key = `im.cursor.${user}.${device}`;
    const saved = storage.get(this.key, null);
    this.seq = Number.isInteger(saved?.seq) && saved.seq >= 0 ? saved.seq : 0;
    this.epoch = typeof saved?.epoch === "string" ? saved.epoch : null;
  }

  save() {
    storage.set(this.key, { seq: this.seq, epoch: this.epoch });
  }

  /**
   * Take one page ({messages, next, head, epoch, gap, more}) and return what to do with it:
   * `{fresh, gap, again}`: the new entries in seq order, whether history must be reloaded, and whether
   * to pull again right away. A page from another epoch is not applied at all: the cursor restarts at
   * 0 and the caller pulls again (`again`), reloading history (`gap`).
   */
  accept(page) {
    if (!page || !Array.isArray(page.messages)) return { fresh: [], gap: false, again: false };
    if (this.epoch !== null && page.epoch && page.epoch !== this.epoch) {
      this.epoch = page.epoch;
      this.seq = 0;
      this.save();
      return { fresh: [], gap: true, again: true };
    }
    if (page.epoch) this.epoch = page.epoch;
    let floor = this.seq;
    if (page.gap) floor = Math.min(floor, page.next - page.messages.length); // entries after the trim point
    const fresh = page.messages
      .filter((m) => Number.isInteger(m.seq) && m.seq > floor)
      .sort((a, b) => a.seq - b.seq);
    const next = Number.isInteger(page.next) ? page.next : this.seq;
    // After a gap the server's `next` is authoritative even if it is below our old cursor.
    this.seq = page.gap ? next : Math.max(this.seq, next, fresh.at(-1)?.seq ?? 0);
    this.save();
    return { fresh, gap: Boolean(page.gap), again: Boolean(page.more) };
  }
}
