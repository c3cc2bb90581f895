"""Signed, expiring bearer tokens (JWT, HS256) and service-key checks."""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import dataclass

import jwt

from fanout.accounts.model import UserId
from fanout.core.clock import Clock
from fanout.core.errors import Unauthorized

__all__ = ["IssuedToken", "TokenService"]

ALGORITHM = "HS256"
ISSUER = "fanout"


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    user_id: UserId
    expires_ms: int


class TokenService:
    def __init__(
        self, secret: str, clock: Clock, *, ttl_s: int, service_keys: Sequence[str] = ()
    ) -> None:
        if len(secret) < 32:
            raise ValueError("the token secret must be at least 32 characters")
        self._secret = secret
        self._clock = clock
        self._ttl_s = ttl_s
        self._service_keys = tuple(k.encode() for k in service_keys)

    def issue(self, user_id: UserId) -> IssuedToken:
        now_s = self._clock.now_ms() // 1000
        expires_s = now_s + self._ttl_s
        claims = {"sub": str(user_id), "iat": now_s, "exp": expires_s, "iss": ISSUER}
        token = jwt.encode(claims, self._secret, algorithm=ALGORITHM)
        return IssuedToken(token=token, user_id=user_id, expires_ms=expires_s * 1000)

    def verify(self, token: str) -> UserId:
        """The user a token was issued to; ``Unauthorized`` if it is forged, bad or expired."""
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                issuer=ISSUER,
                options={"require": ["sub", "exp", "iat"], "verify_exp": False},
            )
            subject = int(claims["sub"])
            expires_s = int(claims["exp"])
        except (jwt.InvalidTokenError, ValueError, TypeError) as exc:
            raise Unauthorized("the token is not valid") from exc
        # Expiry is checked against the injected clock, not the wall clock PyJWT would use.
        if expires_s * 1000 <= self._clock.now_ms():
            raise Unauthorized("the token has expired")
        return UserId(subject)

    def is_service_key(self, key: str) -> bool:
        candidate = key.encode()
        # compare_digest with every key, so timing does not tell which prefix matched
        return any(hmac.compare_digest(candidate, known) for known in self._service_keys)
