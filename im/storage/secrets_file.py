"""Secrets that must exist but have no safe default: generated once into the data directory."""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

__all__ = ["load_or_create_secret"]

log = logging.getLogger(__name__)


def load_or_create_secret(data_dir: str | os.PathLike[str], name: str, *, protects: str,
                          nbytes: int = 32) -> str:
    """Read ``data_dir/name``, creating it (mode 0600) with a random secret when absent; ``protects`` says
    what the secret protects and what is lost without it (logged when it is generated)."""
    path = Path(data_dir) / name
    if path.exists():
        secret = path.read_text().strip()
        if secret:
            return secret
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(nbytes)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secret + "\n")
    log.warning("no %s configured: generated one into %s; keep it and back it up: %s", name, path, protects)
    return secret
