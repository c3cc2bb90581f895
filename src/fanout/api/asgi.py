"""ASGI entry point for servers that import the app by name (granian runs ``factory()``).

The settings come from the ``FANOUT_*`` environment the CLI prepared for the server process.
"""

from __future__ import annotations

from starlette.types import ASGIApp

from fanout.api.app import create_app
from fanout.core.config import Settings
from fanout.core.gc_pauses import tune_gc

__all__ = ["factory"]


def factory() -> ASGIApp:
    settings = Settings.from_env()
    tune_gc()  # in granian's worker process, as `fanout serve` does under uvicorn
    # As `fanout serve`: scaled processes leave the consumers to `fanout worker`.
    return create_app(settings, roles=()) if settings.scaled else create_app(settings)
