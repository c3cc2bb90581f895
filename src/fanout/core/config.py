"""Settings: one frozen value object built from ``FANOUT_*`` environment variables or CLI flags.

Every field ``name`` is the environment variable ``FANOUT_<NAME>`` and the ``fanout serve`` flag
``--<name-with-dashes>``. Nothing here reads the environment at import time: ``cli.py`` calls
:meth:`Settings.from_env` once.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from fanout.core.errors import Invalid

__all__ = ["SECRET_FIELDS", "Settings"]

ENV_PREFIX = "FANOUT_"
SECRET_FIELDS = frozenset({"secret_key", "service_keys", "links_code_key"})
_URL_FIELDS = frozenset({"database_url", "redis_url"})


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Path("fanout-data")
    database_url: str | None = None
    redis_url: str | None = None
    secret_key: str | None = None  # None → generated on first start and kept by the store
    service_keys: tuple[str, ...] = ()
    server: str = "uvicorn"  # uvicorn | granian
    log_level: str = "info"
    # Snowflake worker id in embedded mode; scaled processes lease theirs from Redis.
    worker_id: int = 0
    # The log: partitions per topic, deliveries before a record goes to <topic>.dlq.
    log_partitions: int = 8
    log_max_attempts: int = 3
    # Embedded: seconds between deletions of records every group acknowledged.
    log_compact_every_s: float = 5.0
    # API.
    max_body_bytes: int = 1_048_576  # 1 MiB of JSON is far beyond any legitimate request
    token_ttl_s: int = 7 * 24 * 3600  # a week, then log in again
    rate_limit_per_s: float = 20.0  # per user and per IP; burst is 5x; 0 disables
    trusted_proxies: tuple[str, ...] = ()  # peers whose X-Forwarded-For is believed
    # Feed (DESIGN.md §5.1).
    feed_strategy: str = "hybrid"
    feed_low_priority_from: int = 10_000
    feed_pull_from: int = 1_000_000
    feed_timeline_cap: int = 800
    feed_inactive_days: int = 30
    # Chat (§5.2).
    chat_group_cap: int = 500
    chat_replay_cap: int = 1000
    chat_large_cap: int = 10_000  # members in a large channel (live delivery to the online)
    chat_small_up_to: int = 100  # channels this small share receipts and presence
    chat_upload_max_bytes: int = 10 * 1_048_576
    chat_queue_frames: int = 1_000  # a connection's outgoing queue; over it: close 4408
    presence_ttl_s: int = 90  # three missed 30 s heartbeats
    # Links (§5.4).
    links_code_key: str | None = None
    links_ttl_days: int = 1825
    links_base_url: str | None = None  # e.g. https://fan.out; unset: the request's own origin
    links_blocklist: tuple[str, ...] = ()  # target domains refused (subdomains included)
    links_country_header: str = "cf-ipcountry"  # set by a trusted proxy in front of us
    links_geoip_db: str | None = None  # a MaxMind .mmdb file: countries from addresses

    def __post_init__(self) -> None:
        problems = self._problems()
        if problems:
            raise Invalid("invalid settings: " + "; ".join(problems), details=problems)

    def _problems(self) -> list[str]:
        problems: list[str] = []
        if bool(self.database_url) != bool(self.redis_url):
            problems.append(
                "scaled mode needs both FANOUT_DATABASE_URL and FANOUT_REDIS_URL (or neither)"
            )
        if self.database_url and urlsplit(self.database_url).scheme not in {
            "postgresql",
            "postgres",
        }:
            problems.append("FANOUT_DATABASE_URL must be a postgresql:// URL")
        if self.redis_url and urlsplit(self.redis_url).scheme not in {"redis", "rediss", "unix"}:
            problems.append("FANOUT_REDIS_URL must be a redis:// URL")
        if self.server not in {"uvicorn", "granian"}:
            problems.append("FANOUT_SERVER must be uvicorn or granian")
        if self.feed_strategy not in {"hybrid", "push", "pull"}:
            problems.append("FANOUT_FEED_STRATEGY must be hybrid, push or pull")
        if not 0 < self.port < 65536:
            problems.append("FANOUT_PORT must be within 1..65535")
        if not 1 <= self.log_partitions <= 1024:
            problems.append("FANOUT_LOG_PARTITIONS must be within 1..1024")
        if self.log_max_attempts < 1:
            problems.append("FANOUT_LOG_MAX_ATTEMPTS must be at least 1")
        if self.log_compact_every_s <= 0:
            problems.append("FANOUT_LOG_COMPACT_EVERY_S must be positive")
        if self.rate_limit_per_s < 0:
            problems.append("FANOUT_RATE_LIMIT_PER_S must not be negative")
        if not 0 <= self.worker_id <= 1023:
            problems.append("FANOUT_WORKER_ID must be within 0..1023")
        return problems

    @property
    def scaled(self) -> bool:
        """True when PostgreSQL and Redis carry the state (many processes, many machines)."""
        return self.database_url is not None

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "fanout.sqlite3"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from ``FANOUT_*`` variables (``os.environ`` by default), then ``overrides``.

        ``overrides`` with the value ``None`` are ignored, so CLI flags that were not given keep
        the environment's value.
        """
        source = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = source.get(ENV_PREFIX + f.name.upper())
            if raw is not None and raw != "":
                values[f.name] = parse_field(f.name, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    def to_env(self) -> dict[str, str]:
        """The ``FANOUT_*`` variables that rebuild these settings in another process."""
        env: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if isinstance(value, tuple):
                value = ",".join(value)
            env[ENV_PREFIX + f.name.upper()] = str(value)
        return env

    def display(self) -> dict[str, str]:
        """Effective settings for humans, secrets and URL passwords masked."""
        shown: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None or value == ():
                text = "(unset)"
            elif f.name in SECRET_FIELDS:
                text = "********"
            elif f.name in _URL_FIELDS:
                text = _mask_url_password(str(value))
            elif isinstance(value, tuple):
                text = ",".join(value)
            else:
                text = str(value)
            shown[ENV_PREFIX + f.name.upper()] = text
        return shown


def field_type(name: str) -> type:
    """The Python type a setting is parsed into (int, float, str, Path or tuple)."""
    default = _DEFAULTS[name]
    if isinstance(default, (bool, int, float, Path, tuple)):
        return type(default)
    return str


def parse_field(name: str, raw: str) -> Any:
    """Parse the text ``raw`` of setting ``name``; ``Invalid`` names the variable on failure."""
    kind = field_type(name)
    try:
        if kind is tuple:
            return tuple(part.strip() for part in raw.split(",") if part.strip())
        return kind(raw)
    except ValueError as exc:
        raise Invalid(
            f"{ENV_PREFIX}{name.upper()}: cannot read {raw!r} as {kind.__name__}"
        ) from exc


def _mask_url_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:****@{parts.hostname or ''}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


_DEFAULTS: dict[str, Any] = {
    f.name: (f.default if f.default is not dataclasses.MISSING else None) for f in fields(Settings)
}
