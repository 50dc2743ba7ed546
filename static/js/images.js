// Inline image previews: which file messages show as a picture, their blob URLs (a download needs the
// bearer token, so an <img> cannot point at the API itself) and the full-size viewer dialog.
//
// Only raster types are shown inline: an SVG can carry script, and a blob URL has this page's origin.

const PREVIEW_TYPES = new Set(["image/png", "image/jpeg", "image/gif", "image/webp", "image/avif", "image/bmp"]);
const MAX_PREVIEW_BYTES = 15 * 1024 * 1024; // larger pictures stay a file card: a preview is no reason to download them
const MAX_CACHED = 200;

/** Whether a file message ({id, name, size, type}) is shown as a picture. */
export function isPreviewable(info) {
  return PREVIEW_TYPES.has(info.type.toLowerCase()) && !(info.size > MAX_PREVIEW_BYTES);
}

export class ImagePreviews {
  /** `token()` gives the bearer token; `onReady(fileId)` runs once a picture loaded or failed. */
  constructor({ token, onReady }) {
    this.token = token;
    this.onReady = onReady;
    this.urls = new Map(); // file id -> blob URL, null while loading, false when it cannot be shown
  }

  /** The picture's blob URL; null while it loads (loading starts now), false when it cannot be shown. */
  url(info) {
    if (!this.urls.has(info.id)) this.load(info);
    return this.urls.get(info.id);
  }

  async load(info) {
    this.urls.set(info.id, null);
    let url = false;
    try {
      const response = await fetch(`/api/v1/files/${encodeURIComponent(info.id)}`, {
        headers: { Authorization: `Bearer ${this.token()}` },
      });
      if (response.ok) {
        // The type is the one we chose to show, whatever the response claims.
        url = URL.createObjectURL(new Blob([await response.arrayBuffer()], { type: info.type.toLowerCase() }));
      }
    } catch {
      // shown as a file card instead
    }
    this.urls.set(info.id, url);
    this.evict();
    this.onReady(info.id);
  }

  evict() {
    while (this.urls.size > MAX_CACHED) {
      const [oldest, url] = this.urls.entries().next().value;
      if (url) URL.revokeObjectURL(url);
      this.urls.delete(oldest);
    }
  }

  clear() {
    for (const url of this.urls.values()) if (url) URL.revokeObjectURL(url);
    this.urls.clear();
  }
}

/** Show a loaded picture full size in the viewer dialog (the dialog's Download button gets `onDownload`). */
export function openImageViewer(info, url, onDownload) {
  const dialog = document.getElementById("image-viewer");
  const image = document.getElementById("image-viewer-image");
  image.src = url;
  image.alt = info.name;
  document.getElementById("image-viewer-name").textContent = info.name;
  document.getElementById("image-viewer-download").onclick = () => onDownload(info);
  dialog.showModal();
}

/** Wire the viewer's close controls once: the Close button, and a click on the backdrop. */
export function wireImageViewer() {
  const dialog = document.getElementById("image-viewer");
  document.getElementById("image-viewer-close").addEventListener("click", () => dialog.close());
  dialog.addEventListener("click", (event) => { if (event.target === dialog) dialog.close(); });
  dialog.addEventListener("close", () => { document.getElementById("image-viewer-image").removeAttribute("src"); });
}
