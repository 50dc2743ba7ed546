// File messages: upload to POST /api/v1/files (GridFS on the server), then send a message of kind
// "file" that references it. Downloads need the bearer token, so they go through fetch + a blob URL
// rather than a plain link. Hidden when the server has no files API (features.files).

import { ApiError } from "./api.js";

export class Files {
  constructor(session) {
    this.session = session;
    this.enabled = Boolean(session.features.files);
  }

  async send(file) {
    const session = this.session;
    const convId = session.activeId;
    if (!this.enabled || !convId) return;
    const address = session.addressOf(convId);
    if (!address) return;
    const notice = document.getElementById("gap-notice");
    notice.hidden = false;
    notice.textContent = `Uploading ${file.name}…`;
    try {
      const reply = await session.api.request("POST", "/api/v1/files", {
        body: file, query: { ...address, name: file.name }, timeoutMs: 120000,
        headers: { "Content-Type": file.type || "application/octet-stream" },
      });
      // The message body is the file id; the server turns it into {file_id, name, size, content_type}.
      const display = { file_id: reply.file_id, name: reply.name || file.name, size: reply.size ?? file.size,
        content_type: reply.content_type || file.type };
      session.outbox.enqueue({ ...address, conv: convId, body: reply.file_id, kind: "file", display });
      notice.hidden = true;
    } catch (err) {
      notice.textContent = err instanceof ApiError && err.status === 413
        ? `${file.name} is too large to send.` : `Could not upload ${file.name}: ${err.message}`;
    }
  }

  async download(info) {
    try {
      const response = await fetch(`/api/v1/files/${encodeURIComponent(info.id)}`, {
        headers: { Authorization: `Bearer ${this.session.api.token}` },
      });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const url = URL.createObjectURL(await response.blob());
      const link = Object.assign(document.createElement("a"), { href: url, download: info.name });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 30000);
    } catch {
      const notice = document.getElementById("gap-notice");
      notice.hidden = false;
      notice.textContent = `Could not download ${info.name}.`;
    }
  }
}
