"""The client's cursor rules (static/js/sync.js), run in Chromium against the module the page loads.

These are the rules that keep order and exactly-once on the client side: entries at or below the
cursor are dropped, `gap` restarts from the server's floor, a new `epoch` restarts the cursor at 0,
and `more` asks for another pull at once.
"""

from __future__ import annotations

from typing import Any

from tests.helpers import Node
from tests.web.support import evaluate_on_client

SCRIPT = """
async () => {
  localStorage.clear();
  const { Cursor } = await import('/js/sync.js');
  const m = (seq) => ({ seq, msg_id: 'm' + seq, body: 'b' + seq });
  const page = (seqs, next, extra = {}) => ({ messages: seqs.map(m), next, head: next, epoch: 'E1',
                                              gap: false, more: false, ...extra });
  const seqs = (r) => r.fresh.map((x) => x.seq);
  const out = {};
  const c = new Cursor('u', 'd');
  out.first = seqs(c.accept(page([1, 2, 3], 3)));
  out.dupes = seqs(c.accept(page([2, 3, 4], 4)));              // a retried or racing pull
  out.unordered = seqs(c.accept(page([6, 5], 6, { more: true })));
  out.more = c.accept(page([], 6, { more: true })).again;
  out.saved = new Cursor('u', 'd').seq;                         // persisted per user+device
  out.otherDevice = new Cursor('u', 'd2').seq;
  const gap = c.accept(page([9, 10], 10, { gap: true }));     // trimmed past our cursor
  out.gap = [gap.gap, seqs(gap), c.seq];
  const epoch = c.accept({ ...page([1], 1), epoch: 'E2' });     // inbox recreated
  out.epoch = [epoch.gap, epoch.again, seqs(epoch), c.seq, c.epoch];
  out.afterEpoch = seqs(c.accept({ ...page([1, 2], 2), epoch: 'E2' }));
  out.garbage = seqs(c.accept({ messages: 'nope' }));
  return out;
}
"""


async def test_cursor_rules(node: Node, browser: Any) -> None:
    out = await evaluate_on_client(browser, node.base_url, SCRIPT)
    assert out["first"] == [1, 2, 3]
    assert out["dupes"] == [4]
    assert out["unordered"] == [5, 6]
    assert out["more"] is True
    assert out["saved"] == 6 and out["otherDevice"] == 0
    assert out["gap"] == [True, [9, 10], 10]
    assert out["epoch"] == [True, True, [], 0, "E2"]
    assert out["afterEpoch"] == [1, 2]
    assert out["garbage"] == []


FEATURES_SCRIPT = """
async () => {
  const { specPaths, featuresFrom } = await import('/js/features.js');
  const text = await (await fetch('/api/v1/openapi.yaml')).text();
  const f = featuresFrom(specPaths(text));
  return { paths: [...f.paths], presence: f.presence, groups: f.groups, files: f.files, history: f.history };
}
"""


async def test_features_follow_the_servers_spec(node: Node, browser: Any) -> None:
    """The client turns on exactly the features whose paths the server's OpenAPI document lists."""
    out = await evaluate_on_client(browser, node.base_url, FEATURES_SCRIPT)
    assert "/api/v1/messages" in out["paths"] and "/api/v1/poll" in out["paths"]
    assert out["presence"] == ("/api/v1/presence" in out["paths"])
    assert out["groups"] == ("/api/v1/groups" in out["paths"])
    assert out["files"] == ("/api/v1/files" in out["paths"])
