// The server's index of the user's conversations (GET /api/v1/conversations): every conversation with
// its last message, unread count and read markers, newest activity first. Read when a session starts
// (and after a gap), so a fresh device lists everything at once instead of waiting for new messages.

const PAGE_SIZE = 100; // the most the server gives per page
const MAX_PAGES = 20; // a sidebar of 2,000 conversations is plenty; older ones come back with a message

/**
 * Read every page, following `next_before` while `more`; `onPage(conversations)` runs for each page as
 * it arrives, so the list fills from the newest. Throws the ApiError of a failed page.
 */
export async function readConversationIndex(api, onPage) {
  let before;
  for (let page = 0; page < MAX_PAGES; page += 1) {
    const reply = await api.get("/api/v1/conversations", { query: { limit: PAGE_SIZE, before } });
    onPage(Array.isArray(reply?.conversations) ? reply.conversations : []);
    if (!reply?.more || !reply.next_before) return;
    before = reply.next_before;
  }
}
