"""SQLite adapter of the link store (``fanout.links.ports.LinkStore``); the click store is in
``storage/embedded/clicks.py``."""

from __future__ import annotations

import functools
import sqlite3
from typing import Any

from fanout.accounts.model import UserId
from fanout.core.errors import Conflict
from fanout.links.model import Link
from fanout.storage.embedded.engine import SqliteEngine, WriteTx

__all__ = ["SqliteLinkStore"]

_COLUMNS = "code, owner_id, url, redirect, created_ms, expires_ms, max_visits, deleted"
_TOP = (2**63 - 1, "\U0010ffff")


def _by_code(code: str, conn: sqlite3.Connection) -> Any:
    return conn.execute(f"SELECT {_COLUMNS} FROM links WHERE code = ?", (code,)).fetchone()


def _link(row: tuple[str, int, str, int, int, int | None, int | None, int]) -> Link:
    return Link(row[0], UserId(row[1]), row[2], row[3], row[4], row[5], row[6], bool(row[7]))


class SqliteLinkStore:
    def __init__(self, engine: SqliteEngine) -> None:
        self._engine = engine

    async def lease_block(self, size: int) -> int:
        row = await self._engine.write(
            lambda tx: tx.execute(
                "INSERT INTO counters (name, value) VALUES ('links', ?) ON CONFLICT (name)"
                " DO UPDATE SET value = value + excluded.value RETURNING value",
                (size,),
            ).fetchone()
        )
        return int(row[0]) - size

    async def create(self, link: Link) -> None:
        def job(tx: WriteTx) -> None:
            tx.execute(
                f"INSERT INTO links ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (link.code, link.owner_id, link.url, link.redirect, link.created_ms,
                 link.expires_ms, link.max_visits, int(link.deleted)),
            )  # fmt: skip

        try:
            await self._engine.write(job)
        except sqlite3.IntegrityError as exc:
            raise Conflict(f"the code {link.code!r} is taken") from exc

    async def get(self, code: str) -> Link | None:
        row = await self._engine.read(functools.partial(_by_code, code), lookup=True)
        return None if row is None else _link(row)

    def get_now(self, code: str) -> Link | None:
        """``get`` at once, on the event loop's thread: a redirect's cache miss (a primary key
        lookup) answered without a wait."""
        row = self._engine.lookup(functools.partial(_by_code, code))
        return None if row is None else _link(row)

    async def find_for_reuse(self, owner: UserId, url: str) -> Link | None:
        row = await self._engine.read(
            lambda c: c.execute(
                f"SELECT {_COLUMNS} FROM links WHERE owner_id = ? AND url = ? AND deleted = 0"
                " ORDER BY created_ms DESC LIMIT 1",
                (owner, url),
            ).fetchone()
        )
        return None if row is None else _link(row)

    async def by_owner(
        self, owner: UserId, before: tuple[int, str] | None, limit: int
    ) -> list[Link]:
        at = before or _TOP
        rows = await self._engine.read(
            lambda c: c.execute(
                f"SELECT {_COLUMNS} FROM links WHERE owner_id = ? AND deleted = 0"
                " AND (created_ms, code) < (?, ?) ORDER BY created_ms DESC, code DESC LIMIT ?",
                (owner, at[0], at[1], limit),
            ).fetchall()
        )
        return [_link(r) for r in rows]

    async def delete(self, code: str) -> bool:
        changed = await self._engine.write(
            lambda tx: (
                tx.execute(
                    "UPDATE links SET deleted = 1 WHERE code = ? AND deleted = 0", (code,)
                ).rowcount
            )
        )
        return bool(changed)

    async def take_visit(self, code: str) -> bool:
        row = await self._engine.write(
            lambda tx: tx.execute(
                "UPDATE links SET visits = visits + 1 WHERE code = ?"
                " AND (max_visits IS NULL OR visits < max_visits) RETURNING visits",
                (code,),
            ).fetchone()
        )
        return row is not None
