"""SQLite migrations that rebuild a table keep what it held."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from fanout.storage import migrations
from fanout.storage.embedded import migrate as migrate_module
from fanout.storage.embedded.engine import SqliteEngine

EVENTS_BY_ROW = 6  # 0006_chat_events_rowid


async def test_chat_events_keep_their_rows_and_key_when_moved_to_a_rowid_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "old.sqlite3"
    found = migrations.discover(migrate_module.MIGRATIONS_PACKAGE)
    before = [m for m in found if m.version < EVENTS_BY_ROW]
    with monkeypatch.context() as patch:
        patch.setattr(migrate_module, "discover", lambda package: before)
        old = SqliteEngine(path)
        await old.start()
        await old.close()
    rows = [(ch, seq, seq * 10, b'{"seq":%d}' % seq) for ch in (1, 2) for seq in (3, 1, 2)]
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executemany(
        "INSERT INTO chat_events (channel_id, seq, msg_no, body) VALUES (?, ?, ?, ?)", rows
    )
    conn.close()

    new = SqliteEngine(path)
    await new.start()  # applies the rest
    await new.close()
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        kept = conn.execute(
            "SELECT channel_id, seq, msg_no, body FROM chat_events ORDER BY channel_id, seq"
        ).fetchall()
        assert kept == sorted(rows)
        conn.execute("SELECT rowid FROM chat_events")  # a rowid table now: 0006 ran
        with pytest.raises(sqlite3.IntegrityError):  # (channel_id, seq) is still a key
            conn.execute("INSERT INTO chat_events VALUES (1, 2, 2, x'00')")
    finally:
        conn.close()
