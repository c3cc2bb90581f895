"""Accounts: registration, login, token authentication, profiles."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from fanout.accounts.model import NewUser, User, UserId
from fanout.accounts.passwords import PasswordHasher
from fanout.accounts.ports import UserStore
from fanout.accounts.tokens import IssuedToken, TokenService
from fanout.core.clock import Clock
from fanout.core.errors import Invalid, Unauthorized

__all__ = ["USERNAME_PATTERN", "AccountService"]

USERNAME_PATTERN = r"^[a-z0-9_]{3,32}$"
PASSWORD_MIN_CHARS = 8
PASSWORD_MAX_CHARS = 1024  # argon2 accepts more, but hashing a megabyte is a cheap DoS
DISPLAY_NAME_MAX_CHARS = 64
_USERNAME = re.compile(USERNAME_PATTERN)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class AccountService:
    """Registration and login.

    * ``register`` validates, hashes the password and stores the user; a taken username raises
      ``Conflict`` and stores nothing.
    * ``login`` answers ``Unauthorized`` alike for an unknown user and a wrong password, and does
      the same hashing work in both cases so timing does not reveal which usernames exist.
    """

    def __init__(
        self,
        users: UserStore,
        tokens: TokenService,
        hasher: PasswordHasher,
        clock: Clock,
        next_id: Callable[[], int],
    ) -> None:
        self._users = users
        self._tokens = tokens
        self._hasher = hasher
        self._clock = clock
        self._next_id = next_id
        self._dummy_hash: str | None = None

    async def register(self, username: str, password: str, display_name: str | None) -> User:
        problems = []
        if not _USERNAME.match(username):
            problems.append({"field": "username", "message": "must match [a-z0-9_]{3,32}"})
        if not PASSWORD_MIN_CHARS <= len(password) <= PASSWORD_MAX_CHARS:
            problems.append(
                {
                    "field": "password",
                    "message": f"must be {PASSWORD_MIN_CHARS} to {PASSWORD_MAX_CHARS} characters",
                }
            )
        name = (display_name if display_name is not None else username).strip()
        if not 1 <= len(name) <= DISPLAY_NAME_MAX_CHARS or _CONTROL.search(name):
            problems.append(
                {
                    "field": "display_name",
                    "message": f"must be 1 to {DISPLAY_NAME_MAX_CHARS} printable characters",
                }
            )
        if problems:
            raise Invalid("the account data is not valid", details=problems)
        new = NewUser(
            id=UserId(self._next_id()),
            username=username,
            display_name=name,
            password_hash=await self._hasher.hash(password),
            created_ms=self._clock.now_ms(),
        )
        return await self._users.create(new)

    async def login(self, username: str, password: str) -> IssuedToken:
        found = await self._users.credentials(username) if _USERNAME.match(username) else None
        if found is None:
            if self._dummy_hash is None:
                self._dummy_hash = await self._hasher.hash("not a real password")
            await self._hasher.verify(self._dummy_hash, password)
            raise Unauthorized("wrong username or password")
        user, password_hash = found
        if not await self._hasher.verify(password_hash, password):
            raise Unauthorized("wrong username or password")
        return self._tokens.issue(user.id)

    def authenticate(self, token: str) -> UserId:
        return self._tokens.verify(token)

    async def get(self, user_id: UserId) -> User:
        return await self._users.get(user_id)

    async def get_many(self, user_ids: Sequence[UserId]) -> dict[UserId, User]:
        return await self._users.get_many(user_ids)
