"""Where the terminal client keeps its inbox place between runs, per server, user and device.

Under ``$XDG_STATE_HOME`` (``~/.local/state`` by default), as the XDG base directory specification
asks of state that should outlive a restart but is not worth backing up.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlsplit

__all__ = ["default_state_path"]

# Anything else in a URL's host part, or a name, becomes "_": the result is one path segment.
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def state_home(environ: dict[str, str] | os._Environ[str] = os.environ) -> Path:
    configured = environ.get("XDG_STATE_HOME", "")
    # The specification says a relative value is invalid and is to be ignored.
    if configured and Path(configured).is_absolute():
        return Path(configured)
    return Path.home() / ".local" / "state"


def default_state_path(url: str, user: str, device: str,
                       environ: dict[str, str] | os._Environ[str] = os.environ) -> Path:
    """``<state home>/im-client/<host_port>/<user>-<device>.json`` for the first node's URL."""
    parts = urlsplit(url if "//" in url else f"//{url}")
    server = _UNSAFE.sub("_", parts.netloc or url) or "server"
    name = _UNSAFE.sub("_", f"{user}-{device}")
    return state_home(environ) / "im-client" / server / f"{name}.json"
