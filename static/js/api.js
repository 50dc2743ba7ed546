// REST calls to the server: JSON in and out, the bearer token, timeouts, and one error type.

/** An API failure. `status` 0 means the request never got an answer (network down, timeout). */
export class ApiError extends Error {
  constructor(status, code, message, field = undefined, retryAfterSecs = undefined) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.field = field;
    this.retryAfterSecs = retryAfterSecs;
  }

  /** Worth trying again with the same request (and the same client_msg_id for a send). */
  get retryable() {
    return this.status === 0 || this.status === 408 || this.status === 429 || this.status >= 500;
  }
}

const DEFAULT_TIMEOUT_MS = 15000;

export class Api {
  /** `base` is the server's origin ("" = the page's own); `onUnauthorized` runs on any 401 with a token. */
  constructor({ base = "", token = null, onUnauthorized = null } = {}) {
    this.base = base;
    this.token = token;
    this.onUnauthorized = onUnauthorized;
  }

  /**
   * One request. `body` is sent as JSON unless it is a Blob/File (sent as is, for uploads).
   * `signal` cancels it; `timeoutMs` bounds it (a long-poll passes its own, longer than the wait).
   */
  async request(method, path, { body, query, signal, timeoutMs = DEFAULT_TIMEOUT_MS, headers = {} } = {}) {
    const url = new URL(this.base + path, location.href);
    for (const [name, value] of Object.entries(query ?? {})) {
      if (value !== undefined && value !== null) url.searchParams.set(name, String(value));
    }
    const init = { method, headers: { ...headers }, cache: "no-store" };
    if (this.token) init.headers.Authorization = `Bearer ${this.token}`;
    if (body instanceof Blob) {
      init.body = body;
      if (body.type && !init.headers["Content-Type"]) init.headers["Content-Type"] = body.type;
    } else if (body !== undefined) {
      init.body = JSON.stringify(body);
      init.headers["Content-Type"] = "application/json";
    }
    const timeout = new AbortController();
    const timer = setTimeout(() => timeout.abort(), timeoutMs);
    const onAbort = () => timeout.abort();
    signal?.addEventListener("abort", onAbort, { once: true });
    let response;
    try {
      response = await fetch(url, { ...init, signal: timeout.signal });
    } catch (error) {
      if (signal?.aborted) throw error; // the caller cancelled: let it see the AbortError
      throw new ApiError(0, "network", timeout.signal.aborted ? "the server did not answer in time"
        : "cannot reach the server");
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
    }
    const text = await response.text().catch(() => "");
    let data = null;
    if (text) {
      try { data = JSON.parse(text); } catch { data = text; }
    }
    if (!response.ok) {
      const err = (data && typeof data === "object" && data.error) || {};
      const retryAfter = Number(response.headers.get("Retry-After")) || undefined;
      const error = new ApiError(response.status, err.code ?? `http_${response.status}`,
        err.message ?? response.statusText ?? "request failed", err.field, retryAfter);
      if (response.status === 401 && this.token && this.onUnauthorized) this.onUnauthorized(error);
      throw error;
    }
    return data;
  }

  get(path, options) { return this.request("GET", path, options); }
  post(path, body, options = {}) { return this.request("POST", path, { ...options, body }); }
  put(path, body, options = {}) { return this.request("PUT", path, { ...options, body }); }
  delete(path, options) { return this.request("DELETE", path, options); }
}
