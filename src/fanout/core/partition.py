"""Stable key → partition mapping (never Python's randomized ``hash``)."""

from __future__ import annotations

import zlib

__all__ = ["partition_for"]


def partition_for(key: str, partitions: int) -> int:
    """The partition of ``key``: CRC-32 of its UTF-8 bytes modulo ``partitions``.

    Stable across processes, machines and Python versions, so every producer agrees.
    """
    if partitions < 1:
        raise ValueError("partitions must be at least 1")
    return zlib.crc32(key.encode()) % partitions
