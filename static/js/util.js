// Small helpers shared by the web client's modules. No dependencies, no build step.

/** A random id of `bytes` bytes as hex; crypto.getRandomValues works on plain http too (randomUUID does not). */
export function randomId(bytes = 12) {
  const buf = new Uint8Array(bytes);
  crypto.getRandomValues(buf);
  return Array.from(buf, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Resolve after `ms` milliseconds, or at once (rejecting) when `signal` aborts. */
export function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(abortError());
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => { clearTimeout(timer); reject(abortError()); }, { once: true });
  });
}

export function abortError() {
  return new DOMException("aborted", "AbortError");
}

export function isAbort(error) {
  return error?.name === "AbortError";
}

/**
 * Capped, jittered exponential backoff: attempt 0 waits ~baseMs, doubling up to capMs. The jitter
 * (50-100 % of the step) keeps many clients that lost the same server from reconnecting in lockstep.
 */
export function backoffMs(attempt, { baseMs = 500, capMs = 15000 } = {}) {
  const step = Math.min(capMs, baseMs * 2 ** Math.min(attempt, 16));
  return Math.round(step * (0.5 + Math.random() * 0.5));
}

/** JSON in localStorage that never throws (private mode, quota, corrupt values all read as `fallback`). */
export const storage = {
  get(key, fallback = null) {
    try {
      const raw = localStorage.getItem(key);
      return raw === null ? fallback : JSON.parse(raw);
    } catch {
      return fallback;
    }
  },
  set(key, value) {
    try {
      localStorage.setItem(key, JSON.stringify(value));
      return true;
    } catch {
      return false;
    }
  },
  remove(key) {
    try { localStorage.removeItem(key); } catch { /* nothing to do */ }
  },
};

/** "14:05" today, "Mon 14:05" this week, "12 Mar" before. */
export function formatTime(ms, now = Date.now()) {
  const d = new Date(ms);
  const sameDay = new Date(now).toDateString() === d.toDateString();
  if (sameDay) return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  if (now - ms < 6 * 86400e3) {
    return d.toLocaleDateString([], { weekday: "short" }) + " " +
      d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }
  return d.toLocaleDateString([], { day: "numeric", month: "short" });
}

export function formatBytes(n) {
  if (!Number.isFinite(n)) return "";
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

/** Create an element: h("div", {class: "x", onclick: fn, "aria-label": "y"}, child, "text", ...). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") el.addEventListener(name.slice(2), value);
    else if (name === "class") el.className = value;
    else if (name === "dataset") Object.assign(el.dataset, value);
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** Two letters for an avatar, and a stable hue per name so people are easy to tell apart. */
export function initials(name) {
  const parts = String(name).replace(/[^a-z0-9]+/gi, " ").trim().split(/\s+/);
  const text = parts.length > 1 ? parts[0][0] + parts[1][0] : String(name).slice(0, 2);
  return text.toUpperCase();
}

export function hue(name) {
  let hash = 0;
  for (const ch of String(name)) hash = (hash * 31 + ch.codePointAt(0)) >>> 0;
  return hash % 360;
}
