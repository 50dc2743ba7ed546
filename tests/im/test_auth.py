"""Passwords and tokens: hashes are salted and verify; bad tokens are refused with a reason."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest

from im.accounts.passwords import hash_password, verify_password
from im.accounts.tokens import Principal, TokenIssuer, parse_bearer
from im.errors import AuthError

SECRET = "s" * 40


async def test_password_hash_is_salted_and_verifies() -> None:
    first, second = await hash_password("hunter22"), await hash_password("hunter22")
    assert first != second and "hunter22" not in first
    assert await verify_password("hunter22", first)
    assert not await verify_password("hunter23", first)
    assert not await verify_password("hunter22", "garbage")


def issuer(ttl: int = 60) -> TokenIssuer:
    return TokenIssuer(SECRET, ttl_secs=ttl, issuer="im-test")


def test_token_round_trip_carries_user_and_device() -> None:
    token, expires_at = issuer().issue(Principal("alice", "phone"))
    assert expires_at > time.time()
    assert issuer().verify(token) == Principal("alice", "phone")


def _unsigned(claims: dict) -> str:
    def part(obj: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


@pytest.mark.parametrize("make", [
    lambda: issuer(ttl=-120).issue(Principal("a", "d"))[0],  # expired beyond the clock-skew leeway
    lambda: TokenIssuer("o" * 40, ttl_secs=60, issuer="im-test").issue(Principal("a", "d"))[0],  # forged
    lambda: _unsigned({"sub": "a", "dev": "d", "iss": "im-test", "iat": int(time.time()),
                       "exp": int(time.time()) + 60}),  # alg: none
    lambda: jwt.encode({"sub": "a", "iss": "im-test", "iat": int(time.time()), "exp": int(time.time()) + 60},
                       SECRET, algorithm="HS256"),  # no device claim
    lambda: jwt.encode({"sub": "a", "dev": "d", "iss": "other", "iat": int(time.time()),
                        "exp": int(time.time()) + 60}, SECRET, algorithm="HS256"),  # wrong issuer
    lambda: jwt.encode({"sub": "a", "dev": "d", "iss": "im-test", "iat": int(time.time()),
                        "exp": int(time.time()) + 60}, SECRET, algorithm="HS512"),  # wrong algorithm
    lambda: "not.a.token",
])
def test_bad_tokens_are_refused(make) -> None:
    with pytest.raises(AuthError):
        issuer().verify(make())


def test_a_remembered_token_still_expires() -> None:
    tokens = issuer(ttl=60)
    # Expired 28 s ago: still accepted for 2 s thanks to the clock-skew leeway (30 s), then refused.
    token, _ = tokens.issue(Principal("alice", "phone"), now=time.time() - 60 - 28)
    assert tokens.verify(token) == Principal("alice", "phone")
    assert tokens.verify(token) == Principal("alice", "phone")  # from the verified-token cache
    time.sleep(2.5)
    with pytest.raises(AuthError) as refused:
        tokens.verify(token)
    assert refused.value.code == "token_expired"


def test_bearer_header_parsing() -> None:
    assert parse_bearer(None) == ""
    assert parse_bearer("Bearer abc") == "abc"
    with pytest.raises(AuthError):
        parse_bearer("Basic abc")


def test_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 32"):
        TokenIssuer("short", ttl_secs=60, issuer="x")
