"""Account records."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NewType

__all__ = ["NewUser", "User", "UserId"]

UserId = NewType("UserId", int)


@dataclass(frozen=True, slots=True)
class User:
    id: UserId
    username: str
    display_name: str
    created_ms: int


@dataclass(frozen=True, slots=True)
class NewUser:
    id: UserId
    username: str
    display_name: str
    password_hash: str
    created_ms: int
