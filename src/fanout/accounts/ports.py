"""Ports of the accounts area."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from fanout.accounts.model import NewUser, User, UserId

__all__ = ["SecretStore", "UserStore"]


class UserStore(Protocol):
    """Users by id and by username. Usernames are unique (compared as stored: lowercase)."""

    async def create(self, user: NewUser) -> User:
        """Store a new user; ``Conflict`` if the username is taken."""
        ...

    async def get(self, user_id: UserId) -> User:
        """The user; ``NotFound`` if there is none."""
        ...

    async def get_many(self, user_ids: Sequence[UserId]) -> dict[UserId, User]:
        """The users that exist among ``user_ids`` (missing ones are simply absent)."""
        ...

    async def credentials(self, username: str) -> tuple[User, str] | None:
        """The user and their password hash, or None for an unknown username."""
        ...


class SecretStore(Protocol):
    """Named secrets generated once and shared by every process of a deployment."""

    async def get_or_create(self, name: str, generate: str) -> str:
        """The stored value of ``name``; stores ``generate`` first if there is none (atomic)."""
        ...
