"""Scaled: a link deleted through one process stops redirecting on the others at once, though
each trusts its in-process cache for a minute (the delete feed over Redis pub/sub)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import httpx

from fanout.accounts.passwords import PasswordHasher
from fanout.api.app import create_app
from fanout.core.config import Settings
from fanout.links.resolver import BROADCAST_TTL_S
from tests.api.conftest import platform_of, register, running


async def test_a_delete_on_one_process_is_heard_by_the_others(
    clean_redis_url: str, fresh_database_url: str, tmp_path: Path
) -> None:
    settings = Settings(
        data_dir=tmp_path,
        rate_limit_per_s=0.0,
        redis_url=clean_redis_url,
        database_url=fresh_database_url,
    )
    async with contextlib.AsyncExitStack() as stack:
        clients = []
        for _ in range(2):
            app = create_app(settings, hasher=PasswordHasher.fast_for_tests())
            await stack.enter_async_context(running(app))
            client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")
            clients.append(await stack.enter_async_context(client))
        a, b = clients
        _, token = await register(a, "linker")
        made = await a.post(
            "/v1/links",
            json={"url": "https://example.com/x"},
            headers={"Authorization": f"Bearer {token}"},
        )
        code = made.json()["code"]
        assert (await b.get("/" + code)).status_code == 302  # now in B's LRU for a minute
        assert platform_of(b).resolver._positive_ttl_s == BROADCAST_TTL_S
        deleted = await a.delete(f"/v1/links/{code}", headers={"Authorization": f"Bearer {token}"})
        assert deleted.status_code == 204
        statuses = []
        for _ in range(50):
            statuses.append((await b.get("/" + code)).status_code)
            if statuses[-1] == 410:
                break
            await asyncio.sleep(0.02)
        assert statuses[-1] == 410, statuses
        # A gap in the feed (B's subscriber lost its connection) forgets everything cached.
        platform_of(b).resolver.invalidate_all()
        assert (await b.get("/" + code)).status_code == 410
