"""Password hashing with argon2id, off the event loop (a hash costs tens of milliseconds)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import argon2

__all__ = ["PasswordHasher"]


@dataclass(frozen=True, slots=True)
class PasswordHasher:
    """argon2id with the library's recommended parameters; tests pass cheaper ones."""

    time_cost: int = argon2.DEFAULT_TIME_COST
    memory_cost_kib: int = argon2.DEFAULT_MEMORY_COST
    parallelism: int = argon2.DEFAULT_PARALLELISM

    @classmethod
    def fast_for_tests(cls) -> PasswordHasher:
        return cls(time_cost=1, memory_cost_kib=1024, parallelism=1)

    def _hasher(self) -> argon2.PasswordHasher:
        return argon2.PasswordHasher(
            time_cost=self.time_cost, memory_cost=self.memory_cost_kib, parallelism=self.parallelism
        )

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self._hasher().hash, password)

    async def verify(self, password_hash: str, password: str) -> bool:
        def check() -> bool:
            try:
                return self._hasher().verify(password_hash, password)
            except argon2.exceptions.VerificationError:
                return False
            except argon2.exceptions.InvalidHashError:
                return False

        return await asyncio.to_thread(check)
