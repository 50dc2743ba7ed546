// Links in a message's text: http, https and mailto addresses become anchors that open in a new tab,
// built with DOM calls; everything else (javascript:, data:, markup) stays plain text. The text is
// never parsed as HTML.

import { h } from "./util.js";

const CANDIDATE = /\b(?:https?:\/\/|mailto:)[^\s<>"'`]+/gi;
const SAFE_PROTOCOLS = new Set(["http:", "https:", "mailto:"]);
// Punctuation that ends a sentence rather than the address it follows.
const TRAILING = /[.,;:!?*_~]+$/;

/** Cut what follows an address in prose: trailing punctuation, and closing brackets left unopened in it. */
function trimAddress(text) {
  let end = text.replace(TRAILING, "");
  for (const [open, close] of [["(", ")"], ["[", "]"], ["{", "}"]]) {
    while (end.endsWith(close) && end.split(open).length < end.split(close).length) {
      end = end.slice(0, -1).replace(TRAILING, "");
    }
  }
  return end;
}

/** The address as a URL when it is one we link to, else null. */
export function safeUrl(text) {
  try {
    const url = new URL(text);
    return SAFE_PROTOCOLS.has(url.protocol) ? url : null;
  } catch {
    return null;
  }
}

/** `text` as a list of strings and <a> elements, in order; joined, their text is `text` unchanged. */
export function linkify(value) {
  const text = String(value);
  const parts = [];
  let at = 0;
  for (const match of text.matchAll(CANDIDATE)) {
    const address = trimAddress(match[0]);
    const url = safeUrl(address);
    if (!url) continue;
    if (match.index > at) parts.push(text.slice(at, match.index));
    parts.push(h("a", { class: "link", href: url.href, target: "_blank", rel: "noopener noreferrer" }, address));
    at = match.index + address.length;
  }
  if (at < text.length) parts.push(text.slice(at));
  return parts;
}
