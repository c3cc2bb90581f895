"""PostgreSQL adapters of the accounts ports (``fanout.accounts.ports``)."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from fanout.accounts.model import NewUser, User, UserId
from fanout.core.errors import Conflict, NotFound
from fanout.storage.postgres.engine import PgConnection, PostgresEngine

__all__ = ["PostgresSecretStore", "PostgresUserStore"]

_USER_COLUMNS = "id, username, display_name, created_ms"
_SECRET_PREFIX = "secret:"  # secrets share ``meta`` with other settings: keep them apart


def _user(row: asyncpg.Record) -> User:
    return User(
        id=UserId(row["id"]),
        username=row["username"],
        display_name=row["display_name"],
        created_ms=row["created_ms"],
    )


class PostgresUserStore:
    """Users in table ``users``; the UNIQUE constraint on ``username`` decides races."""

    def __init__(self, engine: PostgresEngine) -> None:
        self._engine = engine

    async def create(self, user: NewUser) -> User:
        try:
            await self._engine.execute(
                "INSERT INTO users (id, username, display_name, password_hash, created_ms)"
                " VALUES ($1, $2, $3, $4, $5)",
                user.id,
                user.username,
                user.display_name,
                user.password_hash,
                user.created_ms,
            )
        except asyncpg.UniqueViolationError as exc:
            if exc.constraint_name == "users_pkey":
                raise Conflict(f"user id {user.id} is taken") from exc
            raise Conflict(f"username {user.username!r} is taken") from exc
        return User(user.id, user.username, user.display_name, user.created_ms)

    async def get(self, user_id: UserId) -> User:
        row = await self._engine.fetchrow(
            f"SELECT {_USER_COLUMNS} FROM users WHERE id = $1", user_id
        )
        if row is None:
            raise NotFound("user", user_id)
        return _user(row)

    async def get_many(self, user_ids: Sequence[UserId]) -> dict[UserId, User]:
        ids = list(dict.fromkeys(user_ids))
        if not ids:
            return {}
        rows = await self._engine.fetch(
            f"SELECT {_USER_COLUMNS} FROM users WHERE id = ANY($1::bigint[])", ids
        )
        return {UserId(row["id"]): _user(row) for row in rows}

    async def credentials(self, username: str) -> tuple[User, str] | None:
        row = await self._engine.fetchrow(
            f"SELECT {_USER_COLUMNS}, password_hash FROM users WHERE username = $1", username
        )
        if row is None:
            return None
        return _user(row), row["password_hash"]


class PostgresSecretStore:
    """Secrets as rows of ``meta`` named ``secret:<name>``; the first stored value wins.

    ``INSERT … ON CONFLICT DO NOTHING`` waits for a concurrent inserter of the same name to
    commit, and the following ``SELECT`` (a new snapshot under READ COMMITTED) then sees its
    row, so processes starting together all get one value.
    """

    def __init__(self, engine: PostgresEngine) -> None:
        self._engine = engine

    async def get_or_create(self, name: str, generate: str) -> str:
        key = _SECRET_PREFIX + name

        async def get_or_create_secret(conn: PgConnection) -> str:
            await conn.execute(
                "INSERT INTO meta (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                key,
                generate,
            )
            value: str = await conn.fetchval("SELECT value FROM meta WHERE name = $1", key)
            return value

        return await self._engine.transaction(get_or_create_secret)
