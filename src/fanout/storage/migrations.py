"""Numbered schema migrations, shared by the SQLite and PostgreSQL engines.

Each engine keeps its migrations as ``NNNN_name.sql`` files in a ``migrations`` package; they
are applied in order, each in its own transaction, and recorded in ``schema_migrations``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

__all__ = ["Migration", "discover"]

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def discover(package: str) -> list[Migration]:
    """The migrations in ``package``, ordered by version; duplicate versions are refused."""
    found: dict[int, Migration] = {}
    for entry in resources.files(package).iterdir():
        match = _NAME.match(entry.name)
        if match is None:
            continue
        version = int(match.group(1))
        if version in found:
            raise RuntimeError(f"two migrations numbered {version} in {package}")
        found[version] = Migration(version, match.group(2), entry.read_text(encoding="utf-8"))
    return [found[v] for v in sorted(found)]
