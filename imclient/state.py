"""The device's place in its inbox (cursor and epoch), kept in a small JSON file between runs.

Without it a client starts every run at seq 0: the server has trimmed what this device acknowledged
last time, so the first pull reports a ``gap`` and the application reloads history for nothing. With it
the next run pulls after the last entry it handed over, as if it had never stopped.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["InboxPlace", "InboxPlaceFile"]

# Every part of the client logs under one name, so configuring that logger configures the client.
log = logging.getLogger("imclient.client")

# The layout of the file; a file of another layout is ignored, not misread.
FORMAT_VERSION = 1


@dataclass(frozen=True, slots=True)
class InboxPlace:
    """``last_seq``: the last entry handed to the application; ``epoch``: the inbox it belongs to."""

    last_seq: int
    epoch: str | None


class InboxPlaceFile:
    """Reads and writes one user's and device's :class:`InboxPlace`.

    The file names its user and device, so a path handed to the wrong client is ignored instead of
    skipping another inbox's entries. A write replaces the file in one rename, so a crash leaves the
    old place or the new one, never a torn file.
    """

    def __init__(self, path: str | os.PathLike[str], user: str, device: str) -> None:
        self.path = Path(path)
        self.user = user
        self.device = device
        self._save_failing = False  # so a full or read-only disk is reported once, not per message

    def load(self) -> InboxPlace | None:
        """The saved place, or None when there is none (first run) or it cannot be used."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as error:
            log.warning("%s: inbox place %s unreadable (%s); starting from the beginning",
                        self.user, self.path, error)
            return None
        if not isinstance(data, dict) or data.get("version") != FORMAT_VERSION:
            log.warning("%s: inbox place %s has an unknown layout; ignored", self.user, self.path)
            return None
        if (data.get("user"), data.get("device")) != (self.user, self.device):
            log.warning("%s/%s: inbox place %s belongs to %s/%s; ignored", self.user, self.device, self.path,
                        data.get("user"), data.get("device"))
            return None
        last_seq, epoch = data.get("last_seq"), data.get("epoch")
        if not isinstance(last_seq, int) or last_seq < 0 or not (epoch is None or isinstance(epoch, str)):
            log.warning("%s: inbox place %s holds no valid cursor; ignored", self.user, self.path)
            return None
        return InboxPlace(last_seq, epoch)

    def save(self, place: InboxPlace) -> None:
        """Write ``place`` atomically; a failure is logged (the client goes on, it only loses its place)."""
        data = {"version": FORMAT_VERSION, "user": self.user, "device": self.device,
                "last_seq": place.last_seq, "epoch": place.epoch}
        try:
            self._write_atomically(json.dumps(data, separators=(",", ":")) + "\n")
        except OSError as error:
            if not self._save_failing:
                log.warning("%s: inbox place not saved to %s (%s); the next run may see messages again",
                            self.user, self.path, error)
            self._save_failing = True
            return
        self._save_failing = False

    def _write_atomically(self, text: str) -> None:
        # The directory is private: the file tells how far this user has read.
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                file.write(text)
                file.flush()
                os.fsync(file.fileno())  # the rename must not land before the data it names
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
