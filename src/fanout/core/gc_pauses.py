"""The garbage collector as every serving process sets it (``fanout serve`` under uvicorn or
granian, ``fanout worker``)."""

from __future__ import annotations

import gc

__all__ = ["GC_YOUNG", "tune_gc"]

GC_YOUNG = 20_000  # allocations between young collections (CPython's default is 700)


def tune_gc() -> None:
    """Shorter pauses for a server holding many connections: what exists at start (modules,
    code) is frozen out of every future collection, and young collections run less often, so
    fewer short-lived objects (frames in flight) survive into the old generation, whose full
    collections walk every live object — 0.5 s and more with 10 000 open WebSockets."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG, middle, old)
