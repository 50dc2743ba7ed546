// The client's picture of its conversations: messages per conversation, unread counts, pending sends
// and receipt marks, cached in localStorage per user+device (the server trims inbox entries once
// acknowledged, so the client keeps what it has shown; the history API, where the server has it,
// refills a conversation after a gap or on a new device).

import { storage } from "./util.js";

const MAX_CACHED_PER_CONV = 200;
const SAVE_DELAY_MS = 250;
const MARK_RANK = { failed: -1, pending: 0, sent: 1, delivered: 2, read: 3 };

/** The later of two msg_ids (24-hex ObjectIds sort by time as strings); either may be null. */
function laterId(a, b) {
  if (!a) return b ?? null;
  if (!b) return a;
  return String(a) > String(b) ? String(a) : String(b);
}

export function directConvId(a, b) {
  const [x, y] = [a, b].sort();
  return `d:${x}:${y}`;
}

/** The other person of a direct conversation id, or null for a group. */
export function peerOf(convId, me) {
  if (!convId.startsWith("d:")) return null;
  const [, a, b] = convId.split(":");
  return a === me ? b : a;
}

export function isGroupConv(convId) {
  return convId.startsWith("g:");
}

/** A receipt entry's body, whatever its shape: {status, msg_ids, by} or null when it is not one. */
export function parseReceipt(entry) {
  let body = entry.body;
  if (typeof body === "string") {
    try { body = JSON.parse(body); } catch { return null; }
  }
  if (!body || typeof body !== "object") return null;
  const status = body.status ?? body.type ?? body.receipt ?? body.kind;
  const ids = body.msg_ids ?? (body.msg_id ? [body.msg_id] : []);
  if (!["delivered", "read"].includes(status) || !Array.isArray(ids)) return null;
  return { status, msgIds: ids.map(String), by: body.by ?? body.user ?? entry.from };
}

export class ChatState {
  constructor(me, device) {
    this.me = me;
    this.key = `im.chats.${me}.${device}`;
    this.conversations = new Map();
    // Conversations the user closed -> the newest msg_id they held then ("" for none). A closed
    // conversation stays out of the list until a newer message arrives or the user opens it again.
    this.closed = new Map();
    this.saveTimer = null;
    const saved = storage.get(this.key, null);
    for (const conv of saved?.conversations ?? []) {
      if (conv && typeof conv.id === "string") this.conversations.set(conv.id, this.revive(conv));
    }
    for (const [id, upto] of Object.entries(saved?.closed ?? {})) this.closed.set(id, String(upto));
  }

  revive(conv) {
    const messages = (conv.messages ?? []).filter((m) => m && (m.msg_id || m.client_msg_id));
    return {
      id: conv.id, title: conv.title ?? null, unread: Number(conv.unread) || 0, unreadMore: Boolean(conv.unreadMore),
      lastActivity: Number(conv.lastActivity) || 0, messages, readUpto: conv.readUpto ?? null,
      group: conv.group ?? null, historyLoaded: false, historyMore: undefined, historyBusy: false,
      // Read markers as the server last listed them: mine (messages of others up to it are read) and,
      // one-to-one, the peer's (my messages up to it are read). `countedUpto`: the newest message the
      // server's unread count included, so an entry arriving later for it is not counted twice.
      lastRead: conv.lastRead ?? null, peerRead: conv.peerRead ?? null, countedUpto: conv.countedUpto ?? null,
    };
  }

  /** The conversation with this id, created empty when new. */
  conv(id) {
    let conv = this.conversations.get(id);
    if (!conv) {
      conv = this.revive({ id, lastActivity: Date.now() });
      this.conversations.set(id, conv);
    }
    return conv;
  }

  /** Close a conversation: out of the list (and its cache dropped) until something newer arrives. */
  close(convId) {
    const conv = this.conversations.get(convId);
    const newest = conv?.messages.filter((m) => m.msg_id).map((m) => m.msg_id).sort().at(-1) ?? "";
    this.closed.set(convId, newest);
    this.conversations.delete(convId);
    this.scheduleSave();
  }

  /** Forget a conversation that should never have existed (its peer has no account). */
  forget(convId) {
    this.conversations.delete(convId);
    this.scheduleSave();
  }

  /** Whether a conversation closed by the user stays closed given its newest message id (or none). */
  staysClosed(convId, newestMsgId = null) {
    if (!this.closed.has(convId)) return false;
    return !newestMsgId || String(newestMsgId) <= this.closed.get(convId);
  }

  /** The user opened the conversation, or something newer arrived: it is listed again. */
  reopen(convId) {
    if (this.closed.delete(convId)) this.scheduleSave();
  }

  /** Conversations, most recent first. */
  list() {
    return [...this.conversations.values()].sort((a, b) => b.lastActivity - a.lastActivity);
  }

  titleOf(conv) {
    if (conv.title) return conv.title;
    return peerOf(conv.id, this.me) ?? conv.id.slice(2);
  }

  totalUnread() {
    let n = 0;
    for (const conv of this.conversations.values()) n += conv.unread;
    return n;
  }

  /**
   * One inbox entry (seq order). `activeConv` is the conversation on screen, whose messages are not
   * counted unread. Returns the id of the conversation that changed, or null.
   */
  addEntry(entry, { activeConv = null, visible = true } = {}) {
    if (entry.kind === "receipt") return this.applyReceipt(entry);
    if (typeof entry.conv !== "string") return null;
    this.reopen(entry.conv);
    const conv = this.conv(entry.conv);
    const message = {
      msg_id: entry.msg_id, client_msg_id: entry.client_msg_id, from: entry.from, to: entry.to,
      kind: entry.kind ?? "text", body: entry.body, ts: entry.ts ?? Date.now(),
    };
    if (conv.messages.some((m) => m.msg_id && m.msg_id === message.msg_id)) return null;
    if (entry.from === this.me) {
      // Our own message coming back through the inbox: replace the pending copy, keep the best mark.
      const pending = conv.messages.findIndex((m) => !m.msg_id && m.client_msg_id === entry.client_msg_id);
      message.state = "sent";
      if (pending >= 0) {
        const old = conv.messages[pending];
        if ((MARK_RANK[old.state] ?? 0) > MARK_RANK.sent) message.state = old.state;
        conv.messages.splice(pending, 1);
      }
    } else if (message.msg_id && conv.lastRead && message.msg_id <= conv.lastRead) {
      message.readSent = true; // read on another device already
    } else if ((entry.conv !== activeConv || !visible) && !(conv.countedUpto && message.msg_id <= conv.countedUpto)) {
      conv.unread += 1;
    }
    this.insertConfirmed(conv, message);
    this.applyPeerRead(conv);
    conv.lastActivity = Math.max(conv.lastActivity, message.ts);
    this.scheduleSave();
    return conv.id;
  }

  /** Confirmed messages stay in arrival (seq) order; pending ones stay last. Older ones (history) go in by ts. */
  insertConfirmed(conv, message) {
    const firstPending = conv.messages.findIndex((m) => !m.msg_id);
    const end = firstPending < 0 ? conv.messages.length : firstPending;
    let at = end;
    while (at > 0 && conv.messages[at - 1].ts > message.ts) at -= 1;
    conv.messages.splice(at, 0, message);
    if (conv.messages.length > MAX_CACHED_PER_CONV) conv.messages.splice(0, conv.messages.length - MAX_CACHED_PER_CONV);
  }

  /** Page of history (any order): merged by msg_id, so it can be loaded any number of times. */
  addHistory(convId, entries) {
    const conv = this.conv(convId);
    const added = this.mergeArchived(conv, entries);
    conv.historyLoaded = true;
    this.scheduleSave();
    return added;
  }

  /** Archived messages (any order) into a conversation, each once; returns how many were new. */
  mergeArchived(conv, entries) {
    const known = new Set(conv.messages.map((m) => m.msg_id).filter(Boolean));
    const fresh = entries.filter((e) => e?.msg_id && !known.has(String(e.msg_id)) && e.kind !== "receipt")
      .sort((a, b) => (a.ts ?? 0) - (b.ts ?? 0));
    for (const e of fresh) {
      const mine = e.from === this.me;
      const readHere = !mine && conv.lastRead && String(e.msg_id) <= conv.lastRead;
      this.insertConfirmed(conv, {
        msg_id: String(e.msg_id), client_msg_id: e.client_msg_id, from: e.from, to: e.to,
        kind: e.kind ?? "text", body: e.body, ts: e.ts ?? 0, state: mine ? (e.status ?? "sent") : undefined,
        ...(readHere ? { readSent: true } : {}),
      });
      conv.lastActivity = Math.max(conv.lastActivity, e.ts ?? 0);
    }
    this.applyPeerRead(conv);
    return fresh.length;
  }

  /**
   * One conversation as the server lists it (GET /api/v1/conversations): its last message, read
   * markers and unread count. `activeConv` is on screen (and `visible`), so nothing in it is unread.
   * `fallbackActivity` places a conversation without messages where the server listed it.
   * Returns the conversation id, or null for one the user closed that has nothing newer since.
   */
  applySummary(summary, { activeConv = null, visible = true, fallbackActivity = 0 } = {}) {
    const convId = summary?.conv;
    if (typeof convId !== "string") return null;
    const last = summary.last_message ?? null;
    if (this.staysClosed(convId, last?.msg_id)) return null;
    this.reopen(convId);
    const conv = this.conv(convId);
    if (summary.group?.name) conv.title = String(summary.group.name);
    conv.lastRead = laterId(conv.lastRead, summary.last_read);
    conv.peerRead = laterId(conv.peerRead, summary.peer_read);
    for (const m of conv.messages) {
      if (m.from !== this.me && m.msg_id && conv.lastRead && m.msg_id <= conv.lastRead) m.readSent = true;
    }
    if (last) this.mergeArchived(conv, [last]);
    else this.applyPeerRead(conv);
    const newest = Math.max(0, ...conv.messages.map((m) => m.ts ?? 0));
    conv.lastActivity = newest || fallbackActivity;
    // The server counted unread messages up to its last one; what this device received after that
    // and has not reported read comes on top.
    conv.countedUpto = laterId(conv.countedUpto, last?.msg_id);
    const newer = conv.messages.filter((m) => m.msg_id && m.from !== this.me && !m.readSent
      && (!conv.countedUpto || m.msg_id > conv.countedUpto)).length;
    const onScreen = convId === activeConv && visible;
    conv.unread = onScreen ? 0 : (Number(summary.unread) || 0) + newer;
    conv.unreadMore = !onScreen && Boolean(summary.unread_more);
    this.scheduleSave();
    return convId;
  }

  /**
   * The server's receipt summary of one of my messages ({delivered: {users}, read: {users}}): who has
   * it and who read it, merged with what this device heard. Returns whether anything changed.
   */
  applyReceiptSummary(convId, msgId, summary) {
    const message = this.conversations.get(convId)?.messages.find((m) => m.msg_id === msgId && m.from === this.me);
    if (!message || !summary) return false;
    let changed = false;
    for (const [status, field] of [["delivered", "deliveredBy"], ["read", "readBy"]]) {
      const users = Array.isArray(summary[status]?.users) ? summary[status].users.map(String) : [];
      const known = new Set(message[field] ?? []);
      const added = users.filter((u) => !known.has(u));
      if (added.length) {
        message[field] = [...known, ...added];
        changed = true;
      }
      if ((users.length || summary[status]?.count > 0) && MARK_RANK[status] > (MARK_RANK[message.state] ?? 0)) {
        message.state = status;
        changed = true;
      }
    }
    if (changed) this.scheduleSave();
    return changed;
  }

  /** My messages up to the peer's read marker show as read (one-to-one). */
  applyPeerRead(conv) {
    if (!conv.peerRead) return;
    for (const m of conv.messages) {
      const id = m.msg_id ?? m.sentMsgId;
      if (m.from === this.me && id && id <= conv.peerRead && (MARK_RANK[m.state] ?? 0) < MARK_RANK.read) {
        m.state = "read";
      }
    }
  }

  /** Show an outbox item (pending, sent or failed) in its conversation. */
  upsertOutgoing(item) {
    const conv = this.conv(item.conv);
    let message = conv.messages.find((m) => m.client_msg_id === item.client_msg_id && m.from === this.me);
    if (!message) {
      message = {
        msg_id: null, client_msg_id: item.client_msg_id, from: this.me, to: item.to ?? item.group, kind: item.kind,
        body: item.display ?? item.body, ts: item.created, state: "pending",
      };
      conv.messages.push(message);
    }
    if (item.state === "sent") {
      if ((MARK_RANK[message.state] ?? 0) < MARK_RANK.sent) message.state = "sent";
      message.sentMsgId = item.receipt?.msg_id ?? null;
    } else if (message.msg_id === null) {
      message.state = item.state;
      message.error = item.error;
      message.final = Boolean(item.final);
    }
    conv.lastActivity = Math.max(conv.lastActivity, item.created);
    this.scheduleSave();
    return conv.id;
  }

  /** Take an unsent message off its conversation (the user removed it). */
  removeOutgoing(convId, clientMsgId) {
    const conv = this.conversations.get(convId);
    if (!conv) return;
    conv.messages = conv.messages.filter((m) => m.msg_id || m.client_msg_id !== clientMsgId);
    this.scheduleSave();
  }

  applyReceipt(entry) {
    const receipt = parseReceipt(entry);
    if (!receipt) return null;
    const ids = new Set(receipt.msgIds);
    let changed = null;
    const convs = entry.conv && this.conversations.has(entry.conv) ? [this.conversations.get(entry.conv)]
      : this.conversations.values();
    for (const conv of convs) {
      for (const m of conv.messages) {
        const id = m.msg_id ?? m.sentMsgId;
        if (m.from !== this.me || !id || !ids.has(id)) continue;
        // Who has it: a group message is delivered to / read by members one by one.
        const field = receipt.status === "read" ? "readBy" : "deliveredBy";
        const who = new Set(m[field] ?? []);
        if (receipt.by && !who.has(receipt.by)) {
          who.add(receipt.by);
          m[field] = [...who];
          changed = conv.id;
        }
        if (MARK_RANK[receipt.status] > (MARK_RANK[m.state] ?? 0)) {
          m.state = receipt.status;
          changed = conv.id;
        }
      }
    }
    if (changed) this.scheduleSave();
    return changed;
  }

  /** Messages of others in `convId` that we have not yet reported read; marks them reported. */
  takeUnreported(convId) {
    const conv = this.conversations.get(convId);
    if (!conv) return [];
    const ids = conv.messages.filter((m) => m.from !== this.me && m.msg_id && !m.readSent).map((m) => {
      m.readSent = true;
      return m.msg_id;
    });
    if (ids.length) this.scheduleSave();
    return ids;
  }

  markRead(convId) {
    const conv = this.conversations.get(convId);
    if (conv && (conv.unread || conv.unreadMore)) {
      conv.unread = 0;
      conv.unreadMore = false;
      this.scheduleSave();
    }
  }

  scheduleSave() {
    clearTimeout(this.saveTimer);
    this.saveTimer = setTimeout(() => this.save(), SAVE_DELAY_MS);
  }

  save() {
    clearTimeout(this.saveTimer);
    const conversations = this.list().map((c) => ({
      id: c.id, title: c.title, unread: c.unread, unreadMore: c.unreadMore, lastActivity: c.lastActivity,
      group: c.group, lastRead: c.lastRead, peerRead: c.peerRead, countedUpto: c.countedUpto,
      messages: c.messages.filter((m) => m.msg_id).slice(-MAX_CACHED_PER_CONV),
    }));
    storage.set(this.key, { conversations, closed: Object.fromEntries(this.closed) });
  }
}
