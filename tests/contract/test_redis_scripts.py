"""Script calls pipelined by ``run_scripts``: a server that lost its scripts (restart, SCRIPT
FLUSH) gets them again, and every call runs exactly once — a script that is not idempotent
(the log's append) included."""

from __future__ import annotations

import redis.asyncio as aioredis

from fanout.core.clock import SystemClock
from fanout.storage.redis import keys
from fanout.storage.redis.connection import connect, run_scripts
from fanout.storage.redis.log import RedisLog

_COUNT = "return redis.call('INCRBY', KEYS[1], ARGV[1])"
_ECHO = "return ARGV[1]"


async def test_every_call_runs_once_after_the_server_lost_its_scripts(
    clean_redis_url: str,
) -> None:
    client: aioredis.Redis = await connect(clean_redis_url)
    try:
        count, echo = client.register_script(_COUNT), client.register_script(_ECHO)
        calls = [(count, ["t:a"], [1]), (echo, [], [b"x"]), (count, ["t:b"], [2]),
                 (count, ["t:a"], [10])]  # fmt: skip
        assert await run_scripts(client, calls) == [1, b"x", 2, 11]  # never loaded before
        await client.script_flush()
        assert await run_scripts(client, calls) == [12, b"x", 4, 22]
        assert await run_scripts(client, calls) == [23, b"x", 6, 33]
    finally:
        await client.aclose()


async def test_the_log_appends_each_record_once_after_a_script_flush(
    clean_redis_url: str,
) -> None:
    client: aioredis.Redis = await connect(clean_redis_url)
    try:
        log = RedisLog(client, SystemClock(), partitions=4)
        records = [(f"k{n}", b"%d" % n) for n in range(40)]
        await log.publish_many("t.flush", records)
        await client.script_flush()
        await log.publish_many("t.flush", records)
        lengths = [await client.xlen(keys.log_stream("t.flush", p)) for p in range(4)]
        assert sum(lengths) == 80
    finally:
        await client.aclose()
