"""Numbered schema migrations of the embedded SQLite database (``migrations/NNNN_name.sql``)."""

from __future__ import annotations

import logging
import sqlite3
import time

from fanout.storage.migrations import discover

__all__ = ["MIGRATIONS_PACKAGE", "migrate"]

log = logging.getLogger(__name__)

MIGRATIONS_PACKAGE = "fanout.storage.embedded.migrations"


def migrate(conn: sqlite3.Connection) -> None:
    """Apply the migrations this database has not had, each in its own transaction."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_ms INTEGER NOT NULL)"
    )
    done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
    for migration in discover(MIGRATIONS_PACKAGE):
        if migration.version in done:
            continue
        log.info("applying SQLite migration %04d_%s", migration.version, migration.name)
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _statements(migration.sql):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_ms) VALUES (?, ?, ?)",
                (migration.version, migration.name, time.time_ns() // 1_000_000),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


def _statements(script: str) -> list[str]:
    """Split a migration into statements (``executescript`` would commit on its own)."""
    statements: list[str] = []
    current: list[str] = []
    for line in script.splitlines():
        if line.strip().startswith("--") and not current:
            continue
        current.append(line)
        candidate = "\n".join(current)
        if sqlite3.complete_statement(candidate):
            statements.append(candidate.strip())
            current = []
    if "\n".join(current).strip():
        raise RuntimeError("a migration ends with an incomplete statement")
    return statements
