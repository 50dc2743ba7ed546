"""Password hashing (scrypt), off the event loop.

The parameters are stored with each hash so they can be raised later without invalidating old hashes.
Hashing costs tens of milliseconds of CPU, so it runs in a worker thread (``hashlib.scrypt`` releases
the GIL) and never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os

__all__ = ["MAX_PASSWORD_CHARS", "MIN_PASSWORD_CHARS", "hash_password", "verify_password"]

# scrypt cost: N=2**14, r=8 uses 16 MiB per hash, below OWASP's N=2**17 so that a login storm on a
# small node stays responsive; the cost is stored per hash and can be raised.
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
SCRYPT_MAXMEM_BYTES = 64 * 1024 * 1024
MIN_PASSWORD_CHARS = 8
MAX_PASSWORD_CHARS = 1024


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=SCRYPT_MAXMEM_BYTES, dklen=32
    )


async def hash_password(password: str) -> str:
    """Return ``scrypt$N$r$p$salt$hash`` for storage."""
    salt = os.urandom(16)
    digest = await asyncio.to_thread(_scrypt, password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


async def verify_password(password: str, stored: str) -> bool:
    """Constant-time check of ``password`` against a hash made by :func:`hash_password`."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = await asyncio.to_thread(_scrypt, password, base64.b64decode(salt), int(n), int(r), int(p))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(expected, actual)
