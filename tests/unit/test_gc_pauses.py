"""Every serving process tunes its garbage collector, granian's worker (which builds the app with
``fanout.api.asgi.factory``) as much as ``fanout serve`` under uvicorn."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from fanout.core.gc_pauses import GC_YOUNG


@pytest.fixture
def collector() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.set_threshold(*thresholds)
    gc.unfreeze()


def test_granian_worker_app_tunes_the_collector(
    collector: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fanout.api.asgi import factory

    monkeypatch.setenv("FANOUT_DATA_DIR", str(tmp_path))
    gc.set_threshold(700, 10, 10)
    assert callable(factory())
    assert gc.get_threshold()[0] == GC_YOUNG
    assert gc.get_freeze_count() > 0
