// Marks of my older group messages, asked from the server's receipt summary
// (GET /api/v1/messages/{id}/receipts) when a group conversation opens: receipts that reached another
// device (or this one before its cache was cleared) are not in this device's inbox, so without this
// a fresh device would show them all as merely sent.

const NEWEST_ASKED = 10; // the messages a reader sees first; older ones keep what this device knows

/**
 * Ask for the newest of my messages in `conv` not yet marked read; `apply(msgId, summary)` takes each
 * answer. Failures are ignored: a mark is decoration.
 */
export async function refreshGroupMarks(api, conv, me, apply) {
  const asked = conv.messages
    .filter((m) => m.from === me && m.msg_id && m.state !== "read")
    .slice(-NEWEST_ASKED);
  await Promise.all(asked.map(async (m) => {
    try {
      apply(m.msg_id, await api.get(`/api/v1/messages/${encodeURIComponent(m.msg_id)}/receipts`));
    } catch {
      // keep the mark this device has
    }
  }));
}
