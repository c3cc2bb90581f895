"""Snowflake-style 64-bit ids: time-sortable, unique per worker id, no coordination per id.

Layout (most significant first): 1 unused sign bit, 41 bits of milliseconds since ``EPOCH_MS``
(about 69 years), 10 bits of worker id, 12 bits of sequence within the millisecond. Two
generators with different worker ids never produce the same id; in scaled mode the worker id is
leased from Redis so no two live processes share one.
"""

from __future__ import annotations

import threading

from fanout.core.clock import Clock

__all__ = [
    "EPOCH_MS",
    "MAX_WORKER_ID",
    "IdGenerator",
    "id_timestamp_ms",
    "min_id_at",
]

EPOCH_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z: ids stay positive 64-bit until ~2093
WORKER_BITS = 10
SEQUENCE_BITS = 12
MAX_WORKER_ID = (1 << WORKER_BITS) - 1
_MAX_SEQUENCE = (1 << SEQUENCE_BITS) - 1
_TIME_SHIFT = WORKER_BITS + SEQUENCE_BITS


class IdGenerator:
    """Thread-safe generator of strictly increasing ids for one worker id."""

    def __init__(self, worker_id: int, clock: Clock) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._last_ms = -1
        self._sequence = 0
        self.worker_id = worker_id

    @property
    def worker_id(self) -> int:
        return self._worker_id

    @worker_id.setter
    def worker_id(self, value: int) -> None:
        if not 0 <= value <= MAX_WORKER_ID:
            raise ValueError(f"worker id must be within 0..{MAX_WORKER_ID}")
        self._worker_id = value

    def next_id(self) -> int:
        with self._lock:
            now = self._clock.now_ms() - EPOCH_MS
            # A clock that steps back (NTP) must not reissue ids: keep counting on the last ms.
            if now <= self._last_ms:
                now = self._last_ms
                self._sequence = (self._sequence + 1) & _MAX_SEQUENCE
                if self._sequence == 0:
                    # 4096 ids within one millisecond: borrow the next millisecond.
                    now = self._last_ms + 1
            else:
                self._sequence = 0
            self._last_ms = now
            return (now << _TIME_SHIFT) | (self._worker_id << SEQUENCE_BITS) | self._sequence


def id_timestamp_ms(snowflake: int) -> int:
    """Unix milliseconds at which ``snowflake`` was generated."""
    return (snowflake >> _TIME_SHIFT) + EPOCH_MS


def min_id_at(unix_ms: int) -> int:
    """The smallest id any generator could issue at ``unix_ms`` (for time-range queries)."""
    return max(unix_ms - EPOCH_MS, 0) << _TIME_SHIFT
