// Relay web client: wiring of session, sync, outbox, state and views.
//
// Flow: sign in -> detect optional server features (features.js) -> start the SyncClient (long-poll
// by default, WebSocket with ?transport=ws or once a probe shows it works: see client.js) -> every
// inbox entry goes through ChatState (dedup, unread, receipts) -> views re-render what changed.

import { Api, ApiError } from "./api.js";
import { detectFeatures } from "./features.js";
import { SyncClient, transportMode } from "./client.js";
import { Outbox } from "./outbox.js";
import { ChatState, directConvId, isGroupConv, peerOf } from "./state.js";
import { avatar, previewText, renderConversationList, renderMessages, renderOnline } from "./views.js";
import { Groups, groupIdOf } from "./groups.js";
import { Files } from "./files.js";
import { wireAccountMenu } from "./account_menu.js";
import { PeerDirectory } from "./peers.js";
import { readConversationIndex } from "./conversation_index.js";
import { ImagePreviews, openImageViewer, wireImageViewer } from "./images.js";
import { DesktopNotifications, renderNotificationToggle } from "./notifications.js";
import { refreshGroupMarks } from "./receipt_marks.js";
import { randomId, storage } from "./util.js";

const USER_ID = /^[a-z0-9_.-]{1,32}$/;
const PRESENCE_EVERY_MS = 10000;
const READ_REPORT_DELAY_MS = 400;
const SESSION_KEY = "im.session";

const $ = (id) => document.getElementById(id);

/** This browser's device id (each device keeps its own cursor on the server). */
function deviceId() {
  let id = storage.get("im.device", null);
  if (typeof id !== "string" || !/^[A-Za-z0-9_.-]{1,32}$/.test(id)) {
    id = `web-${randomId(5)}`;
    storage.set("im.device", id);
  }
  return id;
}

// -- sign in ----------------------------------------------------------------------------------------

let registering = false;

function showAuth(message = "") {
  $("chat-view").hidden = true;
  $("auth-view").hidden = false;
  $("auth-error").textContent = message;
  document.title = "Relay";
  $("auth-user").focus();
}

function setAuthMode(register) {
  registering = register;
  $("tab-login").setAttribute("aria-selected", String(!register));
  $("tab-register").setAttribute("aria-selected", String(register));
  $("auth-submit").textContent = register ? "Create account" : "Sign in";
  $("auth-password").autocomplete = register ? "new-password" : "current-password";
  $("auth-error").textContent = "";
}

async function onAuthSubmit(event) {
  event.preventDefault();
  const user = $("auth-user").value.trim().toLowerCase();
  const password = $("auth-password").value;
  const error = $("auth-error");
  if (!USER_ID.test(user)) {
    error.textContent = "Usernames are 1-32 characters: a-z, 0-9, _ . -";
    return;
  }
  if (!password) {
    error.textContent = "Enter a password.";
    return;
  }
  const submit = $("auth-submit");
  submit.disabled = true;
  error.textContent = "";
  const api = new Api();
  try {
    if (registering) await api.post("/api/v1/users", { user, password });
    const device = deviceId();
    const reply = await api.post("/api/v1/tokens", { user, password, device });
    const session = { user, device, token: reply.token, expires_at: reply.expires_at };
    storage.set(SESSION_KEY, session);
    $("auth-password").value = "";
    await startSession(session);
  } catch (err) {
    error.textContent = authMessage(err);
  } finally {
    submit.disabled = false;
  }
}

function authMessage(err) {
  if (!(err instanceof ApiError)) return "Something went wrong. Try again.";
  if (err.code === "bad_credentials") return "Wrong username or password.";
  if (err.status === 409) return "That username is taken. Pick another, or sign in.";
  if (err.status === 429) return "Too many attempts. Wait a moment and try again.";
  if (err.status === 0) return "Cannot reach the server. Check your connection.";
  return err.message;
}

// -- the session ------------------------------------------------------------------------------------

let session = null; // the running Session

class Session {
  constructor({ user, device, token }) {
    this.me = user;
    this.device = device;
    this.api = new Api({ token, onUnauthorized: () => this.expire("Your session has ended. Please sign in again.") });
    this.state = new ChatState(user, device);
    this.features = null;
    this.activeId = null;
    this.online = new Set();
    this.presenceTimer = null;
    this.readTimer = null;
    this.gapSeen = false;
    this.ended = false;
  }

  async start() {
    $("me-name").textContent = this.me;
    $("me-avatar").replaceWith(Object.assign(avatar(this.me), { id: "me-avatar" }));
    this.features = await detectFeatures(this.api);
    if (this.ended) return;
    this.groups = new Groups(this);
    this.files = new Files(this);
    this.peers = new PeerDirectory(this.api, this.features.userLookup);
    this.images = new ImagePreviews({ token: () => this.api.token, onReady: () => this.imageLoaded() });
    this.notifications = new DesktopNotifications(this.me);
    renderNotificationToggle($("notify-button"), this.notifications);
    this.outbox = new Outbox({
      user: this.me,
      send: (message) => this.sync.send(message),
      onChange: (item) => this.changed(this.state.upsertOutgoing(item)),
    });
    for (const item of this.outbox.unsent()) this.state.upsertOutgoing(item);
    this.sync = new SyncClient({
      api: this.api, user: this.me, device: this.device, mode: transportMode(),
      onEntries: (entries, { catchingUp }) => this.onEntries(entries, { catchingUp }),
      onGap: () => this.onGap(),
      onState: (status) => this.onTransportState(status),
    });
    this.sync.start();
    this.outbox.kick();
    $("online-panel").hidden = !this.features.presence;
    if (this.features.presence) this.refreshPresence();
    const listed = this.loadConversationIndex();
    await this.groups.start();
    this.renderAll();
    await listed;
    await this.dropPhantomChats();
  }

  /**
   * Fill the conversation list from the server's index, page by page (when the server has one). A
   * call while a reading runs joins it: that reading is as recent as the caller needs.
   */
  loadConversationIndex() {
    if (!this.features.conversations) return Promise.resolve();
    this.indexReading ??= this.readConversationIndex().finally(() => { this.indexReading = null; });
    return this.indexReading;
  }

  async readConversationIndex() {
    let previousActivity = Date.now();
    try {
      await readConversationIndex(this.api, (summaries) => {
        if (this.ended) return;
        for (const summary of summaries) {
          const id = this.state.applySummary(summary, {
            activeConv: this.activeId, visible: this.visible(), fallbackActivity: previousActivity,
          });
          if (!id) continue;
          previousActivity = Math.min(previousActivity, this.state.conv(id).lastActivity || previousActivity);
          if (summary.peer) this.peers.known(summary.peer);
        }
        this.renderConversations();
        this.renderTitle();
        if (this.activeId) this.renderMessages();
      });
    } catch {
      // the list is a head start: without it conversations appear as messages arrive
    }
  }

  /**
   * One-to-one chats this device holds without a single stored message are checked once: a chat
   * whose peer has no account (opened before names were checked) is dropped with its unsent messages.
   */
  async dropPhantomChats() {
    const unconfirmed = this.state.list().map((conv) => conv.id)
      .filter((id) => peerOf(id, this.me) && !this.state.conv(id).messages.some((m) => m.msg_id));
    for (const convId of unconfirmed) {
      try {
        if (await this.peers.exists(peerOf(convId, this.me))) continue;
      } catch {
        continue; // the server could not say: keep the chat
      }
      if (this.ended) return;
      this.outbox.discardConversation(convId);
      this.state.forget(convId);
      if (this.activeId === convId) this.back();
      else this.renderConversations();
    }
  }

  stop() {
    this.ended = true;
    this.sync?.stop();
    this.outbox?.stop();
    this.groups?.stop();
    this.images?.clear();
    clearTimeout(this.presenceTimer);
    clearTimeout(this.readTimer);
    this.state.save();
  }

  expire(message) {
    if (!this.ended) this.end(message);
  }

  /** Sign this device out: its tokens are revoked; the local cache stays for the next sign in. */
  async signOut() {
    this.end();
    try { await this.api.delete("/api/v1/tokens", { timeoutMs: 5000 }); } catch { /* signed out locally anyway */ }
  }

  /** Sign out every device of the account; throws (and stays signed in) when the server was not told. */
  async signOutEverywhere() {
    await this.api.delete("/api/v1/tokens", { query: { devices: "all" }, timeoutMs: 10000 });
    this.end();
  }

  end(message = "") {
    this.stop();
    storage.remove(SESSION_KEY);
    if (session === this) session = null;
    showAuth(message);
  }

  // -- incoming ------------------------------------------------------------------------------------

  visible() { return document.visibilityState === "visible"; }

  onEntries(entries, { catchingUp = false } = {}) {
    const changed = new Set();
    for (const entry of entries) {
      if (entry.from === this.me && entry.kind !== "receipt") this.outbox.confirm(entry.client_msg_id, entry.msg_id);
      const id = this.state.addEntry(entry, { activeConv: this.activeId, visible: this.visible() });
      if (id) changed.add(id);
      if (id && isGroupConv(id)) this.groups.noticeConversation(id);
      if (id && !catchingUp) this.notify(entry);
    }
    for (const id of changed) this.changed(id);
    if (changed.has(this.activeId)) this.scheduleReadReport();
  }

  /**
   * A desktop notification for a message of someone else, unless its conversation is on screen.
   * Messages read while catching up at the start are not announced: the list shows them as unread.
   */
  notify(entry) {
    if (entry.from === this.me || entry.kind === "receipt") return;
    if (entry.conv === this.activeId && this.visible()) return;
    const group = isGroupConv(entry.conv);
    this.notifications.show({
      title: this.state.titleOf(this.state.conv(entry.conv)),
      body: previewText(entry, this.me, { group }),
      tag: entry.conv,
      onClick: () => { if (!this.ended) this.open(entry.conv); },
    });
  }

  async toggleNotifications() {
    await this.notifications.toggle();
    renderNotificationToggle($("notify-button"), this.notifications);
  }

  /** The server could not serve our cursor incrementally: refill from history where the server has it. */
  onGap() {
    this.gapSeen = true;
    this.loadConversationIndex();
    for (const conv of this.state.conversations.values()) conv.historyLoaded = false;
    if (this.activeId) this.loadHistory(this.activeId);
    else if (!this.features.history && this.state.conversations.size) this.showGapNotice();
  }

  showGapNotice() {
    const notice = $("gap-notice");
    notice.textContent = "Some messages sent while this device was away are no longer available here.";
    notice.hidden = false;
  }

  onTransportState({ state, transport, detail }) {
    const el = $("connection-status");
    el.dataset.state = state;
    el.dataset.transport = transport;
    const via = transport === "ws" ? "WebSocket" : "long-poll";
    el.textContent = {
      connecting: "Connecting…",
      live: `Online · ${via}`,
      offline: "Offline · reconnecting…",
      kicked: "Signed in elsewhere",
      unauthorized: "Session ended",
    }[state] ?? state;
    el.title = detail ?? "";
    if (state === "live" && this.features?.presence && !this.presenceSeenLive) {
      this.presenceSeenLive = true; // others see us now: refresh the list once, early
      setTimeout(() => this.refreshPresence(), 1000);
    }
    if (state === "unauthorized") this.expire("Your session has ended. Please sign in again.");
    if (state === "kicked") this.expire("You signed in on another device, so this one was signed out.");
  }

  // -- conversations ---------------------------------------------------------------------------------

  open(convId) {
    this.activeId = convId;
    this.state.reopen(convId);
    this.state.conv(convId);
    this.state.markRead(convId);
    $("gap-notice").hidden = true;
    $("chat-view").classList.add("in-chat");
    this.renderAll();
    this.scrollToBottom(true);
    $("composer-input").focus();
    this.scheduleReadReport();
    const conv = this.state.conv(convId);
    const loaded = this.features.history && !conv.historyLoaded ? this.loadHistory(convId) : Promise.resolve();
    if (!this.features.history && this.gapSeen) this.showGapNotice();
    if (isGroupConv(convId)) {
      this.groups.ensureLoaded(convId);
      loaded.then(() => this.refreshGroupMarks(convId));
    }
    const peer = peerOf(convId, this.me);
    if (peer) this.checkPeer(peer);
  }

  /** My newest group messages' marks from the server, for what this device's inbox never told it. */
  async refreshGroupMarks(convId) {
    if (!this.features.receiptSummary || this.ended) return;
    let changed = false;
    await refreshGroupMarks(this.api, this.state.conv(convId), this.me, (msgId, summary) => {
      changed = this.state.applyReceiptSummary(convId, msgId, summary) || changed;
    });
    if (changed && convId === this.activeId) this.renderMessages();
  }

  /** Ask for one person's presence at once (the list refreshes only every PRESENCE_EVERY_MS). */
  async checkPeer(peer) {
    if (!this.features.presence) return;
    try {
      const info = await this.api.get(`/api/v1/presence/${encodeURIComponent(peer)}`);
      const was = this.online.has(peer);
      if (info?.online) this.online.add(peer);
      else this.online.delete(peer);
      if (was !== this.online.has(peer)) {
        this.renderOnline();
        this.renderConversations();
        this.renderHeader();
      }
    } catch {
      // presence is decoration
    }
  }

  /**
   * Open the chat with `user`, first asking the server whether that account exists unless this device
   * already holds the chat or `known` says so. Returns "" or why the chat was not opened.
   */
  async openDirect(user, { known = false } = {}) {
    const peer = user.trim().toLowerCase();
    if (!USER_ID.test(peer)) return "Usernames are 1-32 characters: a-z, 0-9, _ . -";
    if (peer === this.me) return "That's you! Pick someone else.";
    const convId = directConvId(this.me, peer);
    if (!known && !this.state.conversations.has(convId)) {
      try {
        if (!(await this.peers.exists(peer))) return `There is no user named “${peer}”.`;
      } catch (error) {
        return `Could not check “${peer}”: ${error.message}. Try again.`;
      }
      if (this.ended) return "";
    }
    this.open(convId);
    return "";
  }

  /** Take a conversation off the list on this device; a newer message brings it back. */
  closeConversation(convId) {
    this.outbox.discardConversation(convId);
    this.state.close(convId);
    if (this.activeId === convId) this.back();
    else this.renderAll();
  }

  /** Drop an unsent (failed) message. */
  removeMessage(clientMsgId) {
    const convId = this.activeId;
    this.outbox.discard(clientMsgId);
    if (convId) this.state.removeOutgoing(convId, clientMsgId);
    this.changed(convId);
  }

  back() {
    this.activeId = null;
    $("chat-view").classList.remove("in-chat");
    this.renderAll();
  }

  /**
   * Refill a conversation from the server's archive: the newest page, or with `older` the page before
   * the oldest message shown (scrolling up). Pages merge by msg_id, so loading twice changes nothing.
   */
  async loadHistory(convId, { older = false } = {}) {
    if (!this.features.history) return;
    const conv = this.state.conv(convId);
    if (older && (conv.historyMore === false || conv.historyBusy)) return;
    const before = older ? conv.messages.find((m) => m.msg_id)?.msg_id : undefined;
    if (older && !before) return;
    conv.historyBusy = true;
    try {
      const page = await this.api.get(`/api/v1/conversations/${encodeURIComponent(convId)}/messages`,
        { query: { limit: 50, before } });
      const messages = Array.isArray(page?.messages) ? page.messages : [];
      if (older || conv.historyMore === undefined) conv.historyMore = Boolean(page?.more);
      const list = $("message-list");
      const fromBottom = list.scrollHeight - list.scrollTop;
      if (this.state.addHistory(convId, messages) && convId === this.activeId) {
        this.changed(convId);
        if (older) list.scrollTop = list.scrollHeight - fromBottom; // keep the reader's place
      }
      conv.historyLoaded = true;
    } catch {
      // history is a refill: without it the conversation shows what this device has
    } finally {
      conv.historyBusy = false;
    }
  }

  // -- outgoing ------------------------------------------------------------------------------------

  /** Where a message in this conversation goes: `{to: user}` or `{group: id}` (null if unknown). */
  addressOf(convId) {
    const peer = peerOf(convId, this.me);
    if (peer) return { to: peer };
    const group = groupIdOf(convId);
    return group && this.features.groups ? { group } : null;
  }

  sendText(text) {
    const body = text.trim();
    if (!body || !this.activeId) return;
    const address = this.addressOf(this.activeId);
    if (!address) return;
    this.outbox.enqueue({ ...address, conv: this.activeId, body, kind: "text" });
    this.scrollToBottom(true);
  }

  /** Report what the user has seen in the open conversation (read receipts), batched. */
  scheduleReadReport() {
    if (!this.activeId || !this.visible()) return;
    this.state.markRead(this.activeId);
    clearTimeout(this.readTimer);
    this.readTimer = setTimeout(() => this.reportRead(), READ_REPORT_DELAY_MS);
  }

  async reportRead() {
    const convId = this.activeId;
    if (!convId || !this.visible() || !this.features.receipts) return;
    const ids = this.state.takeUnreported(convId);
    if (!ids.length) return;
    try {
      const viaSocket = await this.sync.frame({ t: "read", msg_ids: ids });
      if (viaSocket === null && this.features.readPath) {
        await this.api.post(this.features.readPath, { msg_ids: ids });
      }
    } catch {
      for (const m of this.state.conv(convId).messages) if (ids.includes(m.msg_id)) m.readSent = false;
    }
  }

  // -- presence ------------------------------------------------------------------------------------

  async refreshPresence() {
    clearTimeout(this.presenceTimer);
    if (this.ended) return;
    try {
      const users = new Set();
      let after = "";
      for (let page = 0; page < 5; page += 1) { // up to 500 users: a sidebar, not a directory
        const reply = await this.api.get("/api/v1/presence", { query: { limit: 100, after: after || undefined } });
        for (const u of reply?.users ?? []) if (u.online !== false) users.add(u.user);
        if (!reply?.more || !reply.next) break;
        after = reply.next;
      }
      this.online = users;
      this.renderOnline();
      this.renderConversations();
      this.renderHeader();
    } catch {
      // presence is decoration: keep the last list
    }
    if (!this.ended) this.presenceTimer = setTimeout(() => this.refreshPresence(), PRESENCE_EVERY_MS);
  }

  // -- rendering -------------------------------------------------------------------------------------

  changed(convId) {
    this.renderConversations();
    if (convId && convId === this.activeId) {
      const stick = this.nearBottom();
      this.renderMessages();
      if (stick) this.scrollToBottom();
    }
    this.renderTitle();
  }

  renderAll() {
    this.renderConversations();
    this.renderHeader();
    this.renderMessages();
    this.renderOnline();
    this.renderTitle();
  }

  renderTitle() {
    const unread = this.state.totalUnread();
    document.title = unread ? `(${unread}) Relay` : "Relay";
  }

  renderConversations() {
    const count = renderConversationList($("conversation-list"), {
      state: this.state, activeId: this.activeId, online: this.online, onOpen: (id) => this.open(id),
    });
    $("no-conversations").hidden = count > 0;
  }

  renderHeader() {
    const convId = this.activeId;
    const open = Boolean(convId);
    $("empty-chat").hidden = open;
    $("chat-header").hidden = !open;
    $("message-list").hidden = !open;
    $("composer").hidden = !open;
    if (!open) return;
    const conv = this.state.conv(convId);
    const title = this.state.titleOf(conv);
    const peer = peerOf(convId, this.me);
    $("chat-title").textContent = title;
    const sub = $("chat-subtitle");
    if (peer) {
      const online = this.online.has(peer);
      sub.textContent = this.features.presence ? (online ? "online" : "offline") : "direct message";
      sub.dataset.online = String(online);
    } else {
      sub.textContent = this.groups.subtitle(convId);
      sub.dataset.online = "false";
    }
    $("chat-avatar").replaceWith(Object.assign(avatar(title, { group: !peer, online: peer ? this.online.has(peer) : undefined }),
      { id: "chat-avatar" }));
    $("members-button").hidden = !(isGroupConv(convId) && this.features.groups);
    $("attach-label").hidden = !this.features.files;
    $("message-list").setAttribute("aria-label", `Messages with ${title}`);
  }

  renderMessages() {
    if (!this.activeId) return;
    renderMessages($("message-list"), this.state.conv(this.activeId), {
      me: this.me, group: isGroupConv(this.activeId),
      onRetry: (id) => this.outbox.retry(id),
      onRemove: (id) => this.removeMessage(id),
      onDownload: (info) => this.files.download(info),
      images: this.features.files ? this.images : null,
      onOpenImage: (info, url) => openImageViewer(info, url, (file) => this.files.download(file)),
    });
  }

  /** A picture finished loading: show it where it is, keeping a reader at the bottom there. */
  imageLoaded() {
    if (!this.activeId || this.ended) return;
    const stick = this.nearBottom();
    this.renderMessages();
    if (stick) this.scrollToBottom(true);
  }

  renderOnline() {
    if (!this.features?.presence) return;
    const count = renderOnline($("online-list"), [...this.online].sort(), {
      me: this.me, onOpen: (user) => this.openDirect(user, { known: true }),
    });
    $("online-count").textContent = count ? String(count) : "";
    $("online-empty").hidden = count > 0;
  }

  nearBottom() {
    const list = $("message-list");
    return list.scrollHeight - list.scrollTop - list.clientHeight < 80;
  }

  scrollToBottom(force = false) {
    const list = $("message-list");
    if (force || this.nearBottom()) list.scrollTop = list.scrollHeight;
    requestAnimationFrame(() => { list.scrollTop = list.scrollHeight; });
  }
}

async function startSession(saved) {
  session?.stop();
  $("auth-view").hidden = true;
  $("chat-view").hidden = false;
  session = new Session(saved);
  await session.start();
}

// -- wiring --------------------------------------------------------------------------------------------

function wire() {
  $("tab-login").addEventListener("click", () => setAuthMode(false));
  $("tab-register").addEventListener("click", () => setAuthMode(true));
  $("auth-form").addEventListener("submit", onAuthSubmit);
  wireAccountMenu(() => session);
  wireImageViewer();
  $("notify-button").addEventListener("click", () => session?.toggleNotifications());
  $("back-button").addEventListener("click", () => session?.back());

  $("new-chat-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!session) return;
    const input = $("new-chat-input");
    const asked = input.value;
    const button = $("new-chat-form").querySelector("button");
    button.disabled = true;
    const problem = await session.openDirect(asked).finally(() => { button.disabled = false; });
    $("new-chat-error").textContent = problem;
    if (!problem && input.value === asked) input.value = "";
  });
  $("close-chat-button").addEventListener("click", () => {
    if (session?.activeId) session.closeConversation(session.activeId);
  });

  const input = $("composer-input");
  const grow = () => {
    input.style.height = "auto";
    input.style.height = `${Math.min(input.scrollHeight, 160)}px`;
  };
  input.addEventListener("input", grow);
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("composer").requestSubmit();
    }
  });
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    if (!session) return;
    session.sendText(input.value);
    input.value = "";
    grow();
    input.focus();
  });
  $("file-input").addEventListener("change", (event) => {
    const file = event.target.files?.[0];
    event.target.value = "";
    if (file && session) session.files.send(file);
  });
  document.addEventListener("visibilitychange", () => {
    if (session && document.visibilityState === "visible" && session.activeId) {
      session.scheduleReadReport();
      session.renderConversations();
      session.renderTitle();
    }
  });
  window.addEventListener("pagehide", () => session?.state.save());
  $("message-list").addEventListener("scroll", (event) => {
    if (session?.activeId && event.target.scrollTop < 60) session.loadHistory(session.activeId, { older: true });
  }, { passive: true });
}

wire();
setAuthMode(false);
const saved = storage.get(SESSION_KEY, null);
if (saved?.token && saved.user && saved.device && (!saved.expires_at || saved.expires_at * 1000 > Date.now())) {
  startSession(saved);
} else {
  showAuth();
}
