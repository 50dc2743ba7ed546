"""``POST /api/v1/files`` (streamed upload into GridFS) and ``GET /api/v1/files/{id}`` (streamed download).

The upload body is the raw file (not JSON); ``Content-Type`` is recorded, ``?to=<user>`` or
``?group=<id>`` names the conversation it is for and ``?name=`` its file name. Chunks go to the store
as they arrive, so memory per upload is bounded whatever the file size. A body over
``file_max_bytes`` gets a 413 (drained when at most :data:`DRAIN_SLACK_BYTES` larger, so the client
reads the answer; beyond that the connection is closed after the answer).
"""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import quote

from handlers.base import ApiHandler
from im.conversations.files import Upload
from im.errors import ImError, TooLarge
from im.protocol import read_group_id, read_str, read_user_id

__all__ = ["FileHandler", "FilesHandler"]

log = logging.getLogger(__name__)

DRAIN_SLACK_BYTES = 1024 * 1024
MAX_FILE_NAME_CHARS = 255


class FilesHandler(ApiHandler):
    """Upload. Errors found before or while the body streams in are kept and answered once it is read."""

    async def prepare(self) -> None:
        await super().prepare()
        self._upload: Upload | None = None
        self._upload_error: ImError | None = None
        if self.request.method != "POST":
            return
        limit = self.settings_.file_max_bytes
        self.request.connection.set_max_body_size(limit + DRAIN_SLACK_BYTES)
        declared = self.request.headers.get("Content-Length", "")
        too_large = TooLarge(f"the file is larger than {limit} bytes", code="file_too_large")
        if declared.isdigit() and int(declared) > limit + DRAIN_SLACK_BYTES:
            raise too_large
        try:
            if declared.isdigit() and int(declared) > limit:
                raise too_large
            principal = self.principal
            query = self.query()
            to = read_user_id(query, "to") if query.get("to") else ""
            group = read_group_id(query, "group") if query.get("group") else ""
            name = read_str(query, "name", max_chars=MAX_FILE_NAME_CHARS, default="", min_chars=0)
            self._upload = await self.service.start_upload(
                principal.user, to=to, group=group, name=name,
                content_type=self.request.headers.get("Content-Type"),
            )
        except ImError as error:
            self._upload_error = error

    async def data_received(self, chunk: bytes) -> None:
        upload = self._upload
        if upload is None:
            return  # refused already: drain
        try:
            await upload.write(chunk)
        except ImError as error:
            self._upload_error = error
            self._upload = None

    async def post(self) -> None:
        if self._upload_error is not None:
            raise self._upload_error
        upload, self._upload = self._upload, None
        assert upload is not None
        info = await upload.finish()
        self.reply(info.to_dict(), status=201)

    def on_connection_close(self) -> None:
        upload, self._upload = getattr(self, "_upload", None), None
        if upload is not None:
            task = asyncio.ensure_future(upload.abort())  # the partial file is dropped, never served
            task.add_done_callback(lambda t: t.cancelled() or t.exception())


class FileHandler(ApiHandler):
    """Download, only for the uploader and the conversation's participants (others: the same 404)."""

    async def get(self, file_id: str) -> None:
        info, stream = await self.service.download(self.principal.user, file_id)
        chunks = aiter(stream)
        first = await anext(chunks, b"")  # a store or key failure still gets a proper error answer
        self.set_header("Content-Type", info.content_type)
        self.set_header("Content-Length", str(info.size))
        disposition = f"attachment; filename*=UTF-8''{quote(info.name)}" if info.name else "attachment"
        self.set_header("Content-Disposition", disposition)
        # User-supplied content on the server's origin: never sniffed, never run as a page.
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Content-Security-Policy", "sandbox")
        self.write(first)
        async for chunk in chunks:
            await self.flush()
            self.write(chunk)
        self.finish()
