// Outgoing messages: each gets a client_msg_id once, and every retry reuses it, so the server stores
// it once whatever happens to the request or the reply (a retry of a stored message returns the
// original receipt with `duplicate: true`). Messages go out one at a time, in the order typed, and the
// queue is kept in localStorage so a message typed just before a reload is still sent.

import { backoffMs, randomId, sleep, storage } from "./util.js";

// Refusals that a later attempt can overcome (a friend request accepted, a policy changed). Every
// other refusal (no such user or group, not a member, an invalid message) is final: retrying it
// can only fail again, so the user is offered to remove the message instead.
const REFUSALS_THAT_MAY_LIFT = new Set(["not_friends", "not_allowed", "forbidden"]);

/** Why the server refused an item, in the user's words where the code is known. */
function refusalText(error, item) {
  switch (error.code) {
    case "unknown_recipient": return `there is no user named “${item.to}”`;
    case "unknown_group": return "you are not a member of this group any more";
    case "not_friends": return `${item.to} has not accepted you as a friend yet`;
    default: return error.message || "could not send";
  }
}

export class Outbox {
  /**
   * `send(message)` returns the receipt or throws an ApiError; `onChange(item)` runs on every state
   * change of an item: "pending" -> "sent" (with `receipt`) or "failed" (with `error`, and `final`
   * when no retry can succeed).
   */
  constructor({ user, send, onChange }) {
    this.key = `im.outbox.${user}`;
    this.sendFn = send;
    this.onChange = onChange;
    this.items = (storage.get(this.key, []) || []).filter((i) => i && i.client_msg_id && (i.to || i.group));
    for (const item of this.items) if (item.state !== "failed") item.state = "pending";
    this.running = false;
    this.stopped = false;
    this.wake = null;
  }

  /** Items not yet acknowledged (to show them after a reload). */
  unsent() { return this.items.slice(); }

  /**
   * Queue a message to a user (`to`) or a group (`group`); returns the item (it already carries its
   * client_msg_id). `display` is what to show while it is pending when that differs from `body`
   * (a file message's body is the file id; the display is its name and size).
   */
  enqueue({ to = null, group = null, conv, body, kind = "text", display = undefined }) {
    const item = {
      client_msg_id: `w${Date.now().toString(36)}${randomId(6)}`,
      to, group, conv, body, kind, display, state: "pending", attempts: 0, created: Date.now(),
    };
    this.items.push(item);
    this.persist();
    this.onChange(item);
    this.kick();
    return item;
  }

  /** Try a failed item again (same client_msg_id). */
  retry(clientMsgId) {
    const item = this.items.find((i) => i.client_msg_id === clientMsgId);
    if (!item) return;
    item.state = "pending";
    item.error = undefined;
    item.final = false;
    this.persist();
    this.onChange(item);
    this.kick();
  }

  /**
   * Our own message came back through the inbox, so the server has it: stop retrying it. (A lost
   * reply would otherwise be retried until the server answers, only to hear `duplicate: true`.)
   */
  confirm(clientMsgId, msgId) {
    const item = this.items.find((i) => i.client_msg_id === clientMsgId);
    if (!item) return;
    item.state = "sent";
    item.receipt = { msg_id: msgId, client_msg_id: clientMsgId };
    this.items = this.items.filter((i) => i !== item);
    this.persist();
    this.wake?.abort();
  }

  discard(clientMsgId) {
    this.items = this.items.filter((i) => i.client_msg_id !== clientMsgId);
    this.persist();
  }

  /** Drop every unsent message of a conversation (it was closed, or its peer does not exist). */
  discardConversation(convId) {
    this.items = this.items.filter((i) => i.conv !== convId);
    this.persist();
  }

  stop() {
    this.stopped = true;
    this.wake?.abort();
  }

  kick() {
    this.wake?.abort(); // cut a backoff wait short: the user just did something, try now
    if (!this.running) this.drain();
  }

  persist() {
    storage.set(this.key, this.items);
  }

  async drain() {
    this.running = true;
    try {
      let failures = 0;
      while (!this.stopped) {
        const item = this.items.find((i) => i.state === "pending");
        if (!item) return;
        item.attempts += 1;
        try {
          const message = { body: item.body, client_msg_id: item.client_msg_id };
          if (item.group) message.group = item.group;
          else message.to = item.to;
          if (item.kind !== "text") message.kind = item.kind;
          const receipt = await this.sendFn(message);
          failures = 0;
          if (!this.items.includes(item)) continue; // confirmed through the inbox meanwhile
          item.state = "sent";
          item.receipt = receipt;
          this.items = this.items.filter((i) => i !== item);
          this.persist();
          this.onChange(item);
        } catch (error) {
          if (!this.items.includes(item)) continue;
          if (error?.retryable !== true) {
            item.state = "failed";
            item.error = refusalText(error, item);
            item.final = error.status >= 400 && error.status < 500 && !REFUSALS_THAT_MAY_LIFT.has(error.code);
            this.persist();
            this.onChange(item);
            continue; // later messages still go out
          }
          const waitMs = error?.retryAfterSecs ? error.retryAfterSecs * 1000 : backoffMs(failures++, { baseMs: 1000 });
          this.wake = new AbortController();
          try { await sleep(waitMs, this.wake.signal); } catch { /* woken early */ }
          this.wake = null;
        }
      }
    } finally {
      this.running = false;
    }
  }
}
