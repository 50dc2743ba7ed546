// Which optional server features exist, read from the server's own OpenAPI document.
//
// Why the spec rather than probing endpoints: a probe of a missing endpoint is a 404 that Chromium
// prints as a console error, and the contract test (tests/test_openapi.py) guarantees that every route
// of the server is in the spec, so a path listed there is a path the server serves. A server without
// the spec (or an unreadable one) simply gets the core client: 1:1 chat over long-poll or WebSocket.

const PATH_LINE = /^ {2}['"]?(\/[^\s'"]*)['"]?:\s*$/gm;

/** The set of paths listed under `paths:` in the YAML text (a line-level read: no YAML parser needed). */
export function specPaths(yamlText) {
  const paths = new Set();
  for (const match of yamlText.matchAll(PATH_LINE)) paths.add(match[1]);
  return paths;
}

/** Feature flags from a set of paths. */
export function featuresFrom(paths) {
  const has = (p) => paths.has(p);
  const any = (re) => [...paths].some((p) => re.test(p));
  return {
    presence: has("/api/v1/presence"),
    groups: has("/api/v1/groups"),
    friends: has("/api/v1/friends"),
    files: has("/api/v1/files"),
    history: any(/^\/api\/v1\/conversations\/\{[^}]+\}\/messages$/),
    conversations: has("/api/v1/conversations"),
    userLookup: has("/api/v1/users/{user}"),
    // Receipts (delivered/read) exist once the spec has any receipt or read path; `readPath` is the
    // REST equivalent of the WebSocket `read` frame (used on long-poll).
    receipts: any(/receipt|\/read$/),
    readPath: [...paths].find((p) => /\/read$/.test(p) && !p.includes("{")) ?? null,
    receiptSummary: any(/^\/api\/v1\/messages\/\{[^}]+\}\/receipts$/),
    paths,
  };
}

export async function detectFeatures(api) {
  try {
    const text = await api.request("GET", "/api/v1/openapi.yaml", { timeoutMs: 8000 });
    return featuresFrom(specPaths(typeof text === "string" ? text : ""));
  } catch {
    return featuresFrom(new Set());
  }
}
