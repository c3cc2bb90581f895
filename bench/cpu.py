"""CPU seconds from ``/proc``: of given processes, and of the whole machine."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path

__all__ = ["machine_busy_s", "process_cpu_s"]

_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def process_cpu_s(pids: Sequence[int]) -> float:
    """CPU seconds (user + system) the processes ``pids`` have used so far; a process gone
    counts nothing."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / _TICKS_PER_S


def machine_busy_s() -> float:
    """CPU seconds all cores spent busy so far (``/proc/stat``): servers, load generators,
    PostgreSQL, Redis and anything else; not the time the hypervisor gave another guest
    (steal)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    # user, nice, system, irq, softirq (guest time is already counted in user and nice)
    return (fields[0] + fields[1] + fields[2] + fields[5] + fields[6]) / _TICKS_PER_S
