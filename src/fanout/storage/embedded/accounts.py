"""SQLite adapters of the accounts ports."""

from __future__ import annotations

import os
import sqlite3
import tempfile
from collections.abc import Sequence
from pathlib import Path

from fanout.accounts.model import NewUser, User, UserId
from fanout.core.errors import Conflict, NotFound, Unavailable
from fanout.storage.embedded.engine import SqliteEngine, WriteTx

__all__ = ["FileSecretStore", "SqliteUserStore"]

_USER_COLUMNS = "id, username, display_name, created_ms"


def _user(row: tuple[int, str, str, int]) -> User:
    return User(id=UserId(row[0]), username=row[1], display_name=row[2], created_ms=row[3])


class SqliteUserStore:
    def __init__(self, engine: SqliteEngine) -> None:
        self._engine = engine

    async def create(self, user: NewUser) -> User:
        def job(tx: WriteTx) -> None:
            tx.execute(
                "INSERT INTO users (id, username, display_name, password_hash, created_ms)"
                " VALUES (?, ?, ?, ?, ?)",
                (user.id, user.username, user.display_name, user.password_hash, user.created_ms),
            )

        try:
            await self._engine.write(job)
        except sqlite3.IntegrityError as exc:
            raise Conflict(f"username {user.username!r} is taken") from exc
        return User(user.id, user.username, user.display_name, user.created_ms)

    async def get(self, user_id: UserId) -> User:
        row = await self._engine.read(
            lambda conn: conn.execute(
                f"SELECT {_USER_COLUMNS} FROM users WHERE id = ?", (user_id,)
            ).fetchone()
        )
        if row is None:
            raise NotFound("user", user_id)
        return _user(row)

    async def get_many(self, user_ids: Sequence[UserId]) -> dict[UserId, User]:
        ids = list(dict.fromkeys(user_ids))
        if not ids:
            return {}

        def query(conn: sqlite3.Connection) -> list[tuple[int, str, str, int]]:
            marks = ",".join("?" * len(ids))
            return conn.execute(
                f"SELECT {_USER_COLUMNS} FROM users WHERE id IN ({marks})", ids
            ).fetchall()

        return {UserId(row[0]): _user(row) for row in await self._engine.read(query)}

    async def credentials(self, username: str) -> tuple[User, str] | None:
        row = await self._engine.read(
            lambda conn: conn.execute(
                f"SELECT {_USER_COLUMNS}, password_hash FROM users WHERE username = ?",
                (username,),
            ).fetchone()
        )
        if row is None:
            return None
        return _user(row[:4]), row[4]


class FileSecretStore:
    """Secrets as files in the data dir (mode 0600), created once with O_EXCL."""

    def __init__(self, data_dir: Path) -> None:
        self._dir = data_dir

    async def get_or_create(self, name: str, generate: str) -> str:
        """Written whole to a private temporary file, then linked into place: a crash or a
        concurrent first start never sees a partial secret; the first link wins."""
        path = self._dir / name
        self._dir.mkdir(parents=True, exist_ok=True)
        if path.exists():
            return self._read(path)
        fd, tmp = tempfile.mkstemp(dir=self._dir, prefix=f".{name}.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(generate + "\n")
                out.flush()
                os.fsync(out.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:
                return self._read(path)
            return generate
        finally:
            os.unlink(tmp)

    @staticmethod
    def _read(path: Path) -> str:
        value = path.read_text(encoding="utf-8").strip()
        if not value:
            raise Unavailable(f"{path} is empty: remove it to generate a new secret")
        return value
