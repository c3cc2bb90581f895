"""Statements on SQLite hot paths keep a cost that does not grow with the data.

SQLite's planner has no statistics unless ``ANALYZE`` ran, and may pick a join order that scans
a large table; these tests count virtual-machine steps, so they fail on a plan that scans.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from fanout.storage.embedded.chat_messages import EVENTS_AFTER, INDEX_PENDING
from fanout.storage.embedded.engine import SqliteEngine

STEP = 100  # VM instructions per progress callback


def _steps(conn: sqlite3.Connection, sql: str, params: tuple[object, ...] = ()) -> int:
    count = 0

    def tick() -> int:
        nonlocal count
        count += 1
        return 0

    conn.set_progress_handler(tick, STEP)
    try:
        conn.execute(sql, params).fetchall()  # every row: a query runs only up to its first one
    finally:
        conn.set_progress_handler(None, STEP)
    return count * STEP


async def _small_and_large(
    path: Path, measure: Callable[[sqlite3.Connection, int], int], small: int, large: int
) -> tuple[int, int]:
    """``measure`` (steps, with that many rows around what it measures) at ``small`` and at
    ``large``, each in a transaction rolled back, on a database with the migrated schema."""
    engine = SqliteEngine(path)
    await engine.start()
    await engine.close()
    conn = sqlite3.connect(path, isolation_level=None)
    steps = []
    try:
        for rows in (small, large):
            conn.execute("BEGIN")
            try:
                steps.append(measure(conn, rows))
            finally:
                conn.execute("ROLLBACK")
    finally:
        conn.close()
    return steps[0], steps[1]


def _index_one_new_message(conn: sqlite3.Connection, history: int) -> int:
    """Steps to index one pending message with ``history`` messages already indexed."""
    conn.executemany(
        "INSERT INTO chat_messages (id, channel_id, seq, sender_id, client_msg_id, text,"
        " attachments, created_ms) VALUES (?, 1, ?, 1, ?, 'hello', '[]', 0)",
        [(i, i, str(i)) for i in range(1, history + 2)],
    )
    conn.execute("INSERT INTO chat_search (rowid, text) SELECT id, text FROM chat_messages")
    conn.execute("DELETE FROM chat_search WHERE rowid = ?", (history + 1,))
    conn.execute("INSERT INTO chat_search_pending (message_id) VALUES (?)", (history + 1,))
    return _steps(conn, INDEX_PENDING)


async def test_indexing_pending_messages_does_not_scan_the_history(tmp_path: Path) -> None:
    path = tmp_path / "plans.sqlite3"
    small, large = await _small_and_large(path, _index_one_new_message, 10, 20_000)
    # Scanning 20 000 messages costs hundreds of thousands of steps; a lookup by id, a few
    # hundred (the FTS5 insert itself included).
    assert large < small + 2_000, (small, large)


def _read_events_after(conn: sqlite3.Connection, other_events: int) -> int:
    """Steps to read one channel's 10 events after seq 5, beside ``other_events`` of another."""
    rows = [(1, seq, seq, b"{}") for seq in range(1, 21)]
    rows += [(2, seq, seq, b"{}") for seq in range(1, other_events + 1)]
    conn.executemany(
        "INSERT INTO chat_events (channel_id, seq, msg_no, body) VALUES (?, ?, ?, ?)", rows
    )
    return _steps(conn, EVENTS_AFTER, (1, 5, 10))


async def test_reading_a_channels_events_does_not_scan_other_channels(tmp_path: Path) -> None:
    path = tmp_path / "plans.sqlite3"
    small, large = await _small_and_large(path, _read_events_after, 10, 20_000)
    assert large < small + 500, (small, large)
