"""Bearer tokens and service keys."""

from __future__ import annotations

import pytest

from fanout.accounts.model import UserId
from fanout.accounts.tokens import TokenService
from fanout.core.clock import ManualClock
from fanout.core.errors import Unauthorized

SECRET = "k" * 40


def test_tokens_round_trip_until_they_expire() -> None:
    clock = ManualClock()
    tokens = TokenService(SECRET, clock, ttl_s=10)
    issued = tokens.issue(UserId(2**62 + 5))
    assert tokens.verify(issued.token) == 2**62 + 5
    assert issued.expires_ms == (clock.now_ms() // 1000 + 10) * 1000
    clock.advance(10)
    with pytest.raises(Unauthorized, match="expired"):
        tokens.verify(issued.token)


def test_tokens_signed_with_another_secret_are_refused() -> None:
    clock = ManualClock()
    forged = TokenService("x" * 40, clock, ttl_s=10).issue(UserId(1)).token
    with pytest.raises(Unauthorized):
        TokenService(SECRET, clock, ttl_s=10).verify(forged)


def test_short_secrets_are_refused() -> None:
    with pytest.raises(ValueError):
        TokenService("short", ManualClock(), ttl_s=10)


def test_service_keys() -> None:
    tokens = TokenService(SECRET, ManualClock(), ttl_s=10, service_keys=("alpha", "beta"))
    assert tokens.is_service_key("beta") and not tokens.is_service_key("gamma")
    assert not TokenService(SECRET, ManualClock(), ttl_s=10).is_service_key("")
