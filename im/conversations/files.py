"""Files: streamed into GridFS (encrypted with the conversation's data key), streamed back out.

A file belongs to the conversation it was uploaded for (``to`` a user or a ``group``): it is encrypted
with that conversation's data key, and only its uploader and the conversation's participants may
download it. Everyone else gets the same 404 as for a file that does not exist, so ids reveal nothing.
A message of kind ``file`` names the file id; the stored body then carries id, name, size and type.

Contents are sealed in fixed-size segments (``im/conversations/crypto.py``), so memory per upload and
download is one segment whatever the file size.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from bson import ObjectId
from bson.errors import InvalidId
from cryptography.exceptions import InvalidTag
from gridfs import AsyncGridFSBucket, NoFile
from pymongo.asynchronous.database import AsyncDatabase

from im.conversations.crypto import (
    SEGMENT_OVERHEAD_BYTES,
    SEGMENT_PLAIN_BYTES,
    KeyRing,
    SegmentSealer,
    open_segment,
)
from im.errors import InvalidInput, NotFoundError, StoreUnavailable, TooLarge
from im.storage.store import store_errors

__all__ = ["CONTENT_TYPE_PATTERN", "FileInfo", "FileStore", "Upload"]

BUCKET_NAME = "files"
# type/subtype with optional parameters, as in a Content-Type header; anything else is octet-stream.
CONTENT_TYPE_PATTERN = re.compile(r"^[A-Za-z0-9!#$&^_.+-]{1,64}/[A-Za-z0-9!#$&^_.+-]{1,64}(;[ -~]{0,100})?$")
DEFAULT_CONTENT_TYPE = "application/octet-stream"
MAX_FILE_NAME_CHARS = 255


@dataclass(frozen=True, slots=True)
class FileInfo:
    id: str
    owner: str
    conv: str
    name: str
    size: int
    content_type: str
    encrypted: bool

    def to_dict(self) -> dict[str, Any]:
        return {"file_id": self.id, "conv": self.conv, "name": self.name, "size": self.size,
                "content_type": self.content_type}

    def attachment(self) -> dict[str, Any]:
        """The body of a message of kind ``file``."""
        return {"file_id": self.id, "name": self.name, "size": self.size, "content_type": self.content_type}


def _not_found(file_id: str) -> NotFoundError:
    return NotFoundError(f"no file {file_id!r}", code="unknown_file")


def parse_file_id(value: str, *, field: str = "file_id") -> ObjectId:
    try:
        return ObjectId(value)
    except (InvalidId, TypeError):
        raise NotFoundError(f"no file {value!r}", code="unknown_file", field=field) from None


def clean_content_type(value: str | None) -> str:
    value = (value or "").strip()
    return value if CONTENT_TYPE_PATTERN.fullmatch(value) else DEFAULT_CONTENT_TYPE


class Upload:
    """One upload in progress: :meth:`write` chunks as they arrive, then :meth:`finish` or :meth:`abort`."""

    def __init__(self, store: FileStore, info: FileInfo, grid_in: Any, sealer: SegmentSealer | None,
                 max_bytes: int) -> None:
        self._store = store
        self.info = info
        self._grid_in = grid_in
        self._sealer = sealer
        self._max_bytes = max_bytes
        self.size = 0

    async def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self._max_bytes:
            await self.abort()
            raise TooLarge(f"the file is larger than {self._max_bytes} bytes", code="file_too_large")
        data = chunk if self._sealer is None else self._sealer.feed(chunk)
        if data:
            async with store_errors("storing a file"):
                await self._grid_in.write(data)

    async def finish(self) -> FileInfo:
        async with store_errors("storing a file"):
            if self._sealer is not None:
                await self._grid_in.write(self._sealer.finish())
            await self._grid_in.close()
            # Marked complete last: a half-written file is never served or attached.
            await self._store.files_collection.update_one(
                {"_id": ObjectId(self.info.id)},
                {"$set": {"metadata.size": self.size, "metadata.complete": True}},
            )
        return dataclasses.replace(self.info, size=self.size)

    async def abort(self) -> None:
        async with store_errors("dropping a partial file"):
            await self._grid_in.abort()


class FileStore:
    def __init__(self, db: AsyncDatabase[dict[str, Any]], *, cipher: KeyRing | None, max_bytes: int) -> None:
        self._bucket = AsyncGridFSBucket(db, bucket_name=BUCKET_NAME)
        self.files_collection = db[f"{BUCKET_NAME}.files"]
        self._cipher = cipher
        self.max_bytes = max_bytes

    async def start_upload(self, owner: str, conv: str, *, name: str, content_type: str) -> Upload:
        """Open an upload; the caller checked that ``owner`` may post to ``conv``."""
        if len(name) > MAX_FILE_NAME_CHARS:
            raise InvalidInput(f"name is longer than {MAX_FILE_NAME_CHARS} characters", field="name")
        file_id = ObjectId()
        encrypted = self._cipher is not None
        sealer = SegmentSealer(await self._cipher.aead(conv), str(file_id)) if self._cipher else None
        metadata = {"owner": owner, "conv": conv, "content_type": content_type, "encrypted": encrypted,
                    "complete": False}
        async with store_errors("storing a file"):
            grid_in = self._bucket.open_upload_stream_with_id(file_id, name, metadata=metadata)
        info = FileInfo(str(file_id), owner, conv, name, 0, content_type, encrypted)
        return Upload(self, info, grid_in, sealer, self.max_bytes)

    async def info(self, file_id: str) -> FileInfo:
        """A complete file's metadata; :class:`NotFoundError` when absent or still being uploaded."""
        oid = parse_file_id(file_id)
        async with store_errors("reading a file"):
            doc = await self.files_collection.find_one({"_id": oid})
        meta = (doc or {}).get("metadata") or {}
        if doc is None or not meta.get("complete"):
            raise _not_found(file_id)
        return FileInfo(file_id, meta["owner"], meta["conv"], doc.get("filename") or "", meta["size"],
                        meta["content_type"], bool(meta.get("encrypted")))

    async def stream(self, info: FileInfo) -> AsyncIterator[bytes]:
        """The plaintext of a file, one segment at a time; the caller checked access first."""
        async with store_errors("reading a file"):
            try:
                grid_out = await self._bucket.open_download_stream(ObjectId(info.id))
            except NoFile:
                raise _not_found(info.id) from None
        if not info.encrypted:
            while chunk := await grid_out.read(SEGMENT_PLAIN_BYTES):
                yield chunk
            return
        assert self._cipher is not None
        aead = await self._cipher.aead(info.conv)
        segment_bytes = SEGMENT_PLAIN_BYTES + SEGMENT_OVERHEAD_BYTES
        remaining = grid_out.length
        index = 0
        while remaining > 0:
            async with store_errors("reading a file"):
                sealed = await grid_out.read(min(segment_bytes, remaining))
            if not sealed:
                break
            remaining -= len(sealed)
            try:
                yield open_segment(aead, info.id, index, sealed, final=remaining == 0)
            except InvalidTag:
                raise StoreUnavailable("a stored file cannot be decrypted") from None
            index += 1
