// DOM rendering: the conversation list, the message log and the online list. Pure functions of the
// state they are given; all text goes in through textContent (h() never parses HTML).

import { formatBytes, formatTime, h, hue, initials } from "./util.js";
import { isGroupConv, peerOf } from "./state.js";
import { linkify } from "./linkify.js";
import { isPreviewable } from "./images.js";

const MARKS = { pending: "◷", sent: "✓", delivered: "✓✓", read: "✓✓", failed: "!" };
const MARK_LABELS = { pending: "sending", sent: "sent", delivered: "delivered", read: "read", failed: "not sent" };

export function avatar(name, { small = false, group = false, online = undefined } = {}) {
  const el = h("span", { class: `avatar${small ? " small" : ""}${group ? " group" : ""}`, "aria-hidden": "true" },
    initials(name));
  el.style.setProperty("--h", hue(name));
  if (online !== undefined) el.dataset.online = String(Boolean(online));
  return el;
}

/** Parse a file message's body ({file_id|id, name, size, content_type}) or null. */
export function fileInfo(message) {
  let body = message.body;
  if (typeof body === "string") {
    try { body = JSON.parse(body); } catch { return null; }
  }
  if (!body || typeof body !== "object") return null;
  const id = body.file_id ?? body.id;
  if (!id) return null;
  return {
    id: String(id), name: String(body.name ?? body.filename ?? "file"), size: Number(body.size ?? body.length),
    type: String(body.content_type ?? body.type ?? ""),
  };
}

/** One line for the conversation list: who wrote the last message (you, or a group's member) and what. */
export function previewText(message, me, { group = false } = {}) {
  if (!message) return "";
  const who = message.from === me ? "You: " : group && message.from ? `${message.from}: ` : "";
  if (message.kind === "file") return `${who}File: ${fileInfo(message)?.name ?? "file"}`;
  return who + String(message.body ?? "");
}

export function renderConversationList(list, { state, activeId, online, onOpen }) {
  const items = state.list().map((conv) => {
    const title = state.titleOf(conv);
    const last = conv.messages.at(-1);
    const peer = peerOf(conv.id, state.me);
    const group = isGroupConv(conv.id);
    const unread = conv.unreadMore || conv.unread > 99 ? "99+" : String(conv.unread);
    const label = `${group ? "Group " : "Chat with "}${title}${conv.unread ? `, ${unread} unread` : ""}`;
    const button = h("button", {
      type: "button", class: "conv", "aria-label": label, "aria-current": conv.id === activeId ? "true" : "false",
      dataset: { conv: conv.id }, onclick: () => onOpen(conv.id),
    },
    avatar(title, { group, online: peer ? online.has(peer) : undefined }),
    h("span", { class: "conv-body" },
      h("span", { class: "conv-top" },
        h("span", { class: "conv-name" }, title),
        h("span", { class: "conv-time" }, last ? formatTime(last.ts) : "")),
      h("span", { class: "conv-bottom" },
        h("span", { class: "conv-preview" }, previewText(last, state.me, { group }) || (group ? "Group created" : "Say hello")),
        conv.unread ? h("span", { class: "badge unread", "aria-label": `${unread} unread` }, unread) : null)));
    return h("li", {}, button);
  });
  list.replaceChildren(...items);
  return items.length;
}

function dayLabel(ms) {
  const d = new Date(ms);
  const today = new Date();
  const yesterday = new Date(Date.now() - 86400e3);
  if (d.toDateString() === today.toDateString()) return "Today";
  if (d.toDateString() === yesterday.toDateString()) return "Yesterday";
  return d.toLocaleDateString([], { weekday: "long", day: "numeric", month: "long" });
}

function messageContent(message, { onDownload, images, onOpenImage }) {
  if (message.kind === "file") {
    const info = fileInfo(message);
    if (info) {
      const card = fileCard(info, onDownload);
      const url = images && isPreviewable(info) ? images.url(info) : false;
      return url === false ? [card] : [imagePreview(info, url, onOpenImage), card];
    }
  }
  return linkify(String(message.body ?? ""));
}

function fileCard(info, onDownload) {
  return h("a", {
    href: "#", class: "file", "aria-label": `Download ${info.name}`,
    onclick: (event) => { event.preventDefault(); onDownload(info); },
  },
  h("span", { class: "file-icon", "aria-hidden": "true" }, fileIcon()),
  h("span", { class: "file-text" }, h("span", { class: "file-name" }, info.name),
    h("span", { class: "file-size" }, [formatBytes(info.size), info.type].filter(Boolean).join(" · "))));
}

/** A picture's thumbnail (a placeholder while `url` is null); a click opens it full size. */
function imagePreview(info, url, onOpenImage) {
  const image = h("img", { class: "file-image", alt: info.name, dataset: { fileId: info.id } });
  if (url) image.src = url;
  return h("button", {
    type: "button", class: `image-preview${url ? "" : " loading"}`, "aria-label": `Open ${info.name} full size`,
    disabled: !url, onclick: () => onOpenImage(info, url),
  }, image);
}

function fileIcon() {
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  const path = document.createElementNS("http://www.w3.org/2000/svg", "path");
  path.setAttribute("d", "M14 3H7a2 2 0 0 0-2 2v14a2 2 0 0 0 2 2h10a2 2 0 0 0 2-2V8zM14 3v5h5");
  svg.append(path);
  return svg;
}

/** "read by bob, carol" for the tooltip of a mark (group messages are read member by member). */
function markTitle(message, state) {
  const readers = message.readBy ?? [];
  const receivers = message.deliveredBy ?? [];
  if (state === "read" && readers.length) return `read by ${readers.join(", ")}`;
  if (state === "delivered" && receivers.length) return `delivered to ${receivers.join(", ")}`;
  return MARK_LABELS[state];
}

/** Why an own message was not sent, with Retry only when a retry can succeed, and always Remove. */
function failure(message, { onRetry, onRemove }) {
  const id = message.client_msg_id;
  return h("span", { class: "fail" }, `Not sent: ${String(message.error || "the server refused it").replace(/\.$/, "")}.`,
    message.final ? null : h("button", { type: "button", onclick: () => onRetry(id) }, "Retry"),
    h("button", { type: "button", onclick: () => onRemove(id) }, "Remove"));
}

function messageKey(message) {
  return message.msg_id ? `m:${message.msg_id}` : `c:${message.client_msg_id}`;
}

/**
 * The whole message log of one conversation (re-rendered on change; a few hundred items at most).
 * Only messages new since the last render of the same conversation get the entry animation.
 */
export function renderMessages(list, conv, { me, group, onRetry, onRemove, onDownload, images, onOpenImage }) {
  const previous = list.renderedConv === conv.id ? list.renderedKeys : null;
  const keys = new Set();
  const children = [];
  let lastDay = null;
  let lastFrom = null;
  for (const message of conv.messages) {
    const day = new Date(message.ts).toDateString();
    if (day !== lastDay) {
      children.push(h("li", { class: "day", role: "separator" }, dayLabel(message.ts)));
      lastDay = day;
      lastFrom = null;
    }
    const mine = message.from === me;
    const state = mine ? (message.state ?? "sent") : undefined;
    const meta = h("span", { class: "meta" },
      h("time", { datetime: new Date(message.ts).toISOString() }, formatTime(message.ts)),
      mine ? h("span", { class: "mark", title: markTitle(message, state), "aria-label": MARK_LABELS[state] }, MARKS[state]) : null);
    const item = h("li", {
      class: `msg${mine ? " mine" : ""}`,
      dataset: { msgId: message.msg_id ?? "", clientMsgId: message.client_msg_id ?? "", from: message.from, ...(state ? { state } : {}) },
    },
    group && !mine && lastFrom !== message.from ? h("span", { class: "sender" }, message.from) : null,
    h("div", { class: `bubble${message.kind === "file" ? " media" : ""}` },
      h("span", { class: "text" }, ...messageContent(message, { onDownload, images, onOpenImage })), meta),
    state === "failed" ? failure(message, { onRetry, onRemove }) : null);
    if (group && !mine) item.style.setProperty("--h", hue(message.from));
    const key = messageKey(message);
    keys.add(key);
    // An own message whose pending copy was just replaced by the confirmed one is not "new" either.
    if (previous && !previous.has(key) && !(mine && previous.has(`c:${message.client_msg_id}`))) {
      item.classList.add("enter");
    }
    children.push(item);
    lastFrom = message.from;
  }
  list.replaceChildren(...children);
  list.renderedConv = conv.id;
  list.renderedKeys = keys;
}

export function renderOnline(list, users, { me, onOpen }) {
  const others = users.filter((u) => u !== me);
  list.replaceChildren(...others.map((user) => h("li", {},
    h("button", { type: "button", "aria-label": `Chat with ${user} (online)`, onclick: () => onOpen(user) },
      avatar(user, { small: true }), user))));
  return others.length;
}
