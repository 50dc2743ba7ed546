"""Benchmark accounts: users created through the domain's own ``UserStore.create`` and tokens minted
with the server's ``TokenIssuer`` and the secret the benchmark gave the server.

Why not the REST API: every registration and login costs one scrypt hash (~50 ms of server CPU, on
purpose); thousands of them would dominate the run. One hash is computed and shared by every benchmark
user (each hash carries its own salt, so a shared one verifies like any other).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from im.accounts.passwords import hash_password
from im.accounts.tokens import Principal, TokenIssuer
from im.accounts.users import UserStore
from im.storage.store import Store

__all__ = ["BENCH_PASSWORD", "create_users", "mint_tokens"]

BENCH_PASSWORD = "bench-password-not-secret"
# Registrations in flight at once (the store serialises them anyway; a little overlap hides latency).
CREATE_CONCURRENCY = 16


async def create_users(mongo_url: str, db_name: str, users: Sequence[str]) -> None:
    store = Store(mongo_url, db_name, write_concern="1", journal=False)
    try:
        password_hash = await hash_password(BENCH_PASSWORD)
        accounts = UserStore(store)
        gate = asyncio.Semaphore(CREATE_CONCURRENCY)

        async def one(user: str) -> None:
            async with gate:
                await accounts.create(user, password_hash)

        await asyncio.gather(*(one(u) for u in users))
    finally:
        await store.close()


def mint_tokens(
    secret: str, pairs: Sequence[tuple[str, str]], *, issuer: str = "im-server", ttl_secs: int = 24 * 3600
) -> list[str]:
    """One token per ``(user, device)``, as ``POST /api/v1/tokens`` would issue it."""
    issuer_ = TokenIssuer(secret, ttl_secs=ttl_secs, issuer=issuer)
    return [issuer_.issue(Principal(user=user, device=device, version=0))[0] for user, device in pairs]
