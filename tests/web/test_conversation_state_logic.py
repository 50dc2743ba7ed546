"""How a conversation's summary from the server (GET /api/v1/conversations) and the inbox combine in the
client's state (static/js/state.js), run in Chromium against the module the page loads.

The summary and the inbox's catch-up pull race on a fresh device: a message must be counted unread
once whichever comes first; read markers from other devices clear unread counts and are not reported
again; the peer's marker marks my messages read; a closed conversation stays closed until something
newer than what it held arrives.
"""

from __future__ import annotations

from typing import Any

from tests.helpers import Node
from tests.web.support import evaluate_on_client

SCRIPT = """
async () => {
  localStorage.clear();
  const { ChatState } = await import('/js/state.js');
  const { renderConversationList } = await import('/js/views.js');
  const id = (n) => n.toString(16).padStart(24, '0');
  const msg = (n, from, conv = 'd:bob:dan') => ({ msg_id: id(n), conv, from, to: from === 'dan' ? 'bob' : 'dan',
                                                  kind: 'text', body: `m${n}`, ts: n * 1000 });
  const summary = (last, extra = {}) => ({ conv: 'd:bob:dan', kind: 'direct', peer: 'bob', group: null,
    last_message: last, unread: 0, unread_more: false, last_read: null, peer_read: null, ...extra });
  const out = {};

  let s = new ChatState('dan', 'laptop');
  s.addEntry(msg(1, 'bob'), { activeConv: null });                 // the inbox first...
  s.applySummary(summary(msg(2, 'bob'), { unread: 2 }));           // ...then the summary that counted it
  out.inboxFirst = s.conv('d:bob:dan').unread;

  s = new ChatState('dan', 'phone');
  s.applySummary(summary(msg(5, 'bob'), { unread: 3 }));           // the summary first (3, 4 and 5)...
  for (const n of [3, 4]) s.addEntry(msg(n, 'bob'), { activeConv: null });  // ...then the inbox
  out.summaryFirst = s.conv('d:bob:dan').unread;
  s.addEntry(msg(6, 'bob'), { activeConv: null });                 // newer than anything counted
  out.newer = s.conv('d:bob:dan').unread;

  s = new ChatState('dan', 'tablet');
  s.addEntry(msg(7, 'bob'), { activeConv: null });
  s.addEntry(msg(8, 'dan'), { activeConv: null });
  s.addEntry(msg(9, 'dan'), { activeConv: null });
  s.applySummary(summary(msg(9, 'dan'), { last_read: id(7), peer_read: id(8) }));
  out.readElsewhere = [s.conv('d:bob:dan').unread, s.takeUnreported('d:bob:dan')];
  out.marks = s.conv('d:bob:dan').messages.filter((m) => m.from === 'dan').map((m) => m.state);
  s.addEntry(msg(10, 'bob'), { activeConv: null });
  out.unreportedAfter = s.takeUnreported('d:bob:dan');

  s = new ChatState('dan', 'desk');
  s.applySummary(summary(msg(11, 'bob'), { unread: 100, unread_more: true }));
  const list = document.createElement('ul');
  renderConversationList(list, { state: s, activeId: null, online: new Set(), onOpen: () => {} });
  out.manyUnread = list.querySelector('button').getAttribute('aria-label');
  out.onScreen = (s.applySummary(summary(msg(12, 'bob'), { unread: 4 }), { activeConv: 'd:bob:dan' }),
                  s.conv('d:bob:dan').unread);

  s.close('d:bob:dan');
  out.closedSame = s.applySummary(summary(msg(12, 'bob'), { unread: 1 }));
  out.closedListed = s.list().length;
  out.closedNewer = s.applySummary(summary(msg(13, 'bob'), { unread: 1 }));
  return out;
}
"""


async def test_summaries_and_inbox_entries_combine(node: Node, browser: Any) -> None:
    out = await evaluate_on_client(browser, node.base_url, SCRIPT)
    assert out["inboxFirst"] == 2
    assert out["summaryFirst"] == 3
    assert out["newer"] == 4
    assert out["readElsewhere"] == [0, []]  # read on another device: nothing unread, nothing to report
    assert out["marks"] == ["read", "sent"]  # the peer read up to 8
    assert out["unreportedAfter"] == ["00000000000000000000000a"]
    assert out["manyUnread"] == "Chat with bob, 99+ unread"
    assert out["onScreen"] == 0
    assert out["closedSame"] is None and out["closedListed"] == 0
    assert out["closedNewer"] == "d:bob:dan"
