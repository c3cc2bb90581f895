"""kill -9 the process doing a large fan-out; after a restart every follower has the post once.

The graph is loaded in bulk (SQL straight into the store: building 100 000 follows through the
API would take minutes); the post goes through the real path, and the fan-out runs in a real
``fanout`` process that is killed with SIGKILL part-way.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from fanout.core.clock import ManualClock, SystemClock
from fanout.feed.policy import FanoutPolicy

pytestmark = pytest.mark.slow

FOLLOWERS = 100_000
FIRST_FOLLOWER = 10_000_000
NO_TIERS = {"FANOUT_FEED_LOW_PRIORITY_FROM": "1000000000", "FANOUT_FEED_PULL_FROM": "2000000000"}


def wait_for(condition: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def test_embedded_fan_out_survives_kill_9(node_factory: Any, tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {"FANOUT_DATA_DIR": str(data), **NO_TIERS}
    node = node_factory("serve", env=env).start()
    with node.client() as client:
        client.post("/v1/users", json={"username": "celebrity", "password": "p" * 8})
        token = client.post("/v1/sessions", json={"username": "celebrity",
                                                  "password": "p" * 8}).json()  # fmt: skip
        author = int(token["user_id"])
        db = sqlite3.connect(data / "fanout.sqlite3", timeout=30)
        with db:
            db.executemany(
                "INSERT INTO follows (followee_id, follower_id, at_ms) VALUES (?, ?, 0)",
                ((author, FIRST_FOLLOWER + i) for i in range(FOLLOWERS)),
            )
            db.execute("INSERT INTO user_stats (user_id, followers) VALUES (?, ?)",
                       (author, FOLLOWERS))  # fmt: skip
        created = client.post("/v1/posts", json={"text": "to everyone"},
                              headers={"Authorization": f"Bearer {token['token']}"})  # fmt: skip
        assert created.status_code == 201
        post_id = int(created.json()["id"])

    def pushed() -> int:
        row = db.execute("SELECT count(*) FROM timelines WHERE post_id = ?", (post_id,))
        return int(row.fetchone()[0])

    wait_for(lambda: pushed() >= FOLLOWERS // 5, 60, "a fifth of the fan-out")
    node.kill()
    assert pushed() < FOLLOWERS * 0.95, "the fan-out finished before the kill: nothing tested"
    node_factory("serve", env=env, port=node.port).start()
    wait_for(lambda: pushed() == FOLLOWERS, 120, "the fan-out to finish after the restart")
    rows = db.execute(
        "SELECT count(*), count(DISTINCT owner_id), min(owner_id), max(owner_id)"
        " FROM timelines WHERE post_id = ?",
        (post_id,),
    ).fetchone()
    assert rows == (FOLLOWERS, FOLLOWERS, FIRST_FOLLOWER, FIRST_FOLLOWER + FOLLOWERS - 1)
    others = db.execute("SELECT count(*) FROM timelines WHERE post_id != ?", (post_id,))
    assert others.fetchone()[0] == 0
    db.close()


def test_scaled_fan_out_survives_kill_9(
    node_factory: Any, clean_redis_url: str, fresh_database_url: str, tmp_path: Path
) -> None:
    from fanout.storage.redis import keys

    env = {"FANOUT_REDIS_URL": clean_redis_url, "FANOUT_DATABASE_URL": fresh_database_url,
           **NO_TIERS}  # fmt: skip
    author = 9_000_000
    worker = node_factory("worker", "--roles", "feed", env=env).start()  # migrates the schema
    post_id = asyncio.run(_load_graph_and_post(clean_redis_url, fresh_database_url, tmp_path,
                                               author))  # fmt: skip
    import redis

    client = redis.Redis.from_url(clean_redis_url)
    member = post_id.to_bytes(8, "big")

    def has_post(owner: int) -> bool:
        return client.zscore(keys.timeline(owner), member) is not None

    wait_for(lambda: has_post(FIRST_FOLLOWER + FOLLOWERS // 5), 60, "a fifth of the fan-out")
    worker.kill()
    assert not has_post(FIRST_FOLLOWER + FOLLOWERS - 1), "finished before the kill"
    node_factory("worker", "--roles", "feed", env=env).start()
    wait_for(lambda: has_post(FIRST_FOLLOWER + FOLLOWERS - 1), 120, "the fan-out to finish")
    entries: list[list[bytes]] = []
    owners = range(FIRST_FOLLOWER, FIRST_FOLLOWER + FOLLOWERS)
    for start in range(0, FOLLOWERS, 10_000):
        pipe = client.pipeline(transaction=False)
        for owner in owners[start : start + 10_000]:
            pipe.zrange(keys.timeline(owner), 0, -1)
        # 8-byte members are entries; the store keeps its floor marker in the set too.
        entries += [[m for m in members if len(m) == 8] for members in pipe.execute()]
    assert len(entries) == FOLLOWERS
    assert all(found == [member] for found in entries)  # every follower, once, nothing else
    client.close()


async def _load_graph_and_post(redis_url: str, database_url: str, tmp_path: Path,
                               author: int) -> int:  # fmt: skip
    from fanout.accounts.model import UserId
    from tests.feedkit import feed_kit

    backend = {"kind": "scaled", "redis": redis_url, "postgres": database_url}
    policy = FanoutPolicy("hybrid", low_priority_from=10**9, pull_from=2 * 10**9)
    async with feed_kit(backend, tmp_path, policy, ManualClock(SystemClock().now_ms())) as kit:
        engine = kit.stores.posts._engine  # type: ignore[attr-defined]
        await engine.execute(
            "INSERT INTO follows (followee_id, follower_id, at_ms)"
            " SELECT $1, g, 0 FROM generate_series($2::bigint, $3::bigint) AS g",
            author, FIRST_FOLLOWER, FIRST_FOLLOWER + FOLLOWERS - 1,
        )  # fmt: skip
        await engine.execute(
            "INSERT INTO user_stats (user_id, followers) VALUES ($1, $2)", author, FOLLOWERS
        )
        post = await kit.service.create_post(UserId(author), "to everyone", [])
        return int(post.id)
