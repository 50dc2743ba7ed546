"""Bounded password hashing: never more hashes at once than the node allows, a bounded queue, and
refusals (429 auth_busy with a wait) beyond it. Observed through the hasher's own counter of hashes
running inside worker threads, not through timings."""

from __future__ import annotations

import asyncio

import pytest

from im.accounts.accounts import Accounts
from im.accounts.passwords import PasswordHasher, check_hash
from im.accounts.tokens import TokenIssuer
from im.accounts.users import UserStore
from im.errors import AuthError, RateLimited
from im.limits import Limits
from im.storage.store import Store
from tests.helpers import eventually

PASSWORD = "correct horse battery"


async def test_concurrent_hashes_never_exceed_the_bound() -> None:
    hasher = PasswordHasher(concurrency=2, max_waiting=40)
    hashes = await asyncio.gather(*(hasher.hash(f"password {i}") for i in range(12)))
    assert all(check_hash(f"password {i}", h) for i, h in enumerate(hashes))
    assert hasher.peak_running == 2  # the bound, and no more
    assert hasher.running == 0


async def test_beyond_the_queue_callers_are_refused_at_once_with_a_wait() -> None:
    hasher = PasswordHasher(concurrency=1, max_waiting=2)
    results = await asyncio.gather(*(hasher.hash(PASSWORD) for _ in range(10)), return_exceptions=True)
    refused = [r for r in results if isinstance(r, BaseException)]
    assert len(refused) == 7  # one running, two waiting: the other seven are turned away
    assert all(isinstance(r, RateLimited) and r.code == "auth_busy" and r.retry_after_secs >= 1 for r in refused)
    assert hasher.peak_running == 1
    # The queue is free again once they are done.
    assert check_hash(PASSWORD, await hasher.hash(PASSWORD))


async def test_a_caller_that_goes_away_keeps_its_slot_until_its_hash_is_done() -> None:
    """A running hash cannot be stopped, so its slot is not handed on before it ends: the bound holds
    even when callers disconnect mid-hash."""
    hasher = PasswordHasher(concurrency=1, max_waiting=4)
    gone = asyncio.ensure_future(hasher.hash(PASSWORD))
    await eventually(lambda: hasher.running, interval_secs=0.001, what="the hash is running")
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert check_hash(PASSWORD, await hasher.hash(PASSWORD))
    assert hasher.peak_running == 1


async def test_a_caller_that_goes_away_while_waiting_frees_its_place() -> None:
    hasher = PasswordHasher(concurrency=1, max_waiting=1)
    running = asyncio.ensure_future(hasher.hash(PASSWORD))
    waiting = asyncio.ensure_future(hasher.hash(PASSWORD))
    await asyncio.sleep(0)
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    # The waiting place is free again: one more caller may queue behind the running hash.
    assert check_hash(PASSWORD, await hasher.hash(PASSWORD))
    await running


async def test_a_login_storm_runs_at_most_the_bound_of_hashes(store: Store) -> None:
    """Many logins at once, right and wrong passwords, known and unknown users: every one is answered
    and the node never hashed more than its bound at once."""
    users = UserStore(store)
    hasher = PasswordHasher(concurrency=2, max_waiting=100)
    accounts = Accounts(users, TokenIssuer("s" * 40, ttl_secs=60, issuer="im-test"), Limits(), hasher)
    await accounts.start()
    await users.create("alice", await hasher.hash(PASSWORD))

    async def login(i: int) -> str:
        user, password = [("alice", PASSWORD), ("alice", "wrong guess"), (f"nobody{i}", PASSWORD)][i % 3]
        try:
            await accounts.login(user, password, "phone")
        except AuthError as error:
            return error.code
        return "ok"

    outcomes = await asyncio.gather(*(login(i) for i in range(24)))
    assert outcomes.count("ok") == 8 and outcomes.count("bad_credentials") == 16
    assert hasher.peak_running == 2
