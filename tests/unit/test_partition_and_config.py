"""Stable partitioning and settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fanout.core.config import Settings
from fanout.core.errors import Invalid
from fanout.core.partition import partition_for


def test_partitions_are_stable_across_processes() -> None:
    # Pinned values (CRC-32): a change here would move every key to another partition.
    assert [partition_for(k, 8) for k in ("alice", "bob", "42", "")] == [7, 0, 0, 0]
    assert [partition_for(k, 16) for k in ("channel:1", "user-1")] == [0, 4]


@given(st.text(), st.integers(min_value=1, max_value=1024))
def test_partition_is_in_range(key: str, partitions: int) -> None:
    assert 0 <= partition_for(key, partitions) < partitions


def test_keys_spread_over_partitions() -> None:
    counts = [0] * 8
    for i in range(8000):
        counts[partition_for(f"user:{i}", 8)] += 1
    assert min(counts) > 800


def test_settings_from_env_and_overrides() -> None:
    env = {
        "FANOUT_PORT": "9000",
        "FANOUT_DATA_DIR": "/tmp/x",
        "FANOUT_SERVICE_KEYS": "k1, k2,",
        "FANOUT_RATE_LIMIT_PER_S": "2.5",
        "FANOUT_FEED_STRATEGY": "push",
    }
    settings = Settings.from_env(env, port=None, host="0.0.0.0")
    assert settings.port == 9000 and settings.host == "0.0.0.0"
    assert settings.data_dir == Path("/tmp/x")
    assert settings.service_keys == ("k1", "k2")
    assert settings.rate_limit_per_s == 2.5 and settings.feed_strategy == "push"
    assert not settings.scaled
    assert Settings.from_env(settings.to_env()) == settings


def test_scaled_mode_needs_both_urls() -> None:
    with pytest.raises(Invalid):
        Settings(database_url="postgresql://x/y")
    with pytest.raises(Invalid):
        Settings(redis_url="redis://x")
    assert Settings(database_url="postgresql://x/y", redis_url="redis://x").scaled


@pytest.mark.parametrize(
    ("name", "value"),
    [("FANOUT_PORT", "eighty"), ("FANOUT_PORT", "0"), ("FANOUT_FEED_STRATEGY", "magic"),
     ("FANOUT_SERVER", "gunicorn"), ("FANOUT_DATABASE_URL", "mysql://x")],
)  # fmt: skip
def test_bad_settings_name_the_variable(name: str, value: str) -> None:
    env = {name: value}
    if name == "FANOUT_DATABASE_URL":
        env["FANOUT_REDIS_URL"] = "redis://x"
    with pytest.raises(Invalid, match=name):
        Settings.from_env(env)


def test_display_masks_secrets_and_url_passwords() -> None:
    settings = Settings(
        secret_key="s" * 40,
        service_keys=("svc",),
        database_url="postgresql://app:hunter2@db:5432/fanout",
        redis_url="redis://:pw@cache:6379/0",
    )
    shown = settings.display()
    text = "\n".join(shown.values())
    assert "hunter2" not in text and "pw@" not in text and "svc" not in text and "sss" not in text
    assert shown["FANOUT_DATABASE_URL"] == "postgresql://app:****@db:5432/fanout"
    assert shown["FANOUT_SECRET_KEY"] == "********"
