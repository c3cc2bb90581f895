"""The PostgreSQL connection pool, against a real server: reuse, limits, waiting, and never
handing out a connection whose session is in doubt."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest

from fanout.storage.postgres.pool import Connection, ConnectionPool

Connect = Callable[[], Awaitable[Connection]]


@pytest.fixture
def connect(fresh_database_url: str) -> Connect:
    async def connect() -> Connection:
        return await asyncpg.connect(fresh_database_url, timeout=10)

    return connect


@pytest.fixture
async def pool(connect: Connect) -> AsyncIterator[ConnectionPool]:
    pool = ConnectionPool(connect, min_size=1, max_size=2)
    await pool.start()
    try:
        yield pool
    finally:
        async with asyncio.timeout(10):
            await pool.close()


async def backend_pid(conn: Connection) -> int:
    return int(await conn.fetchval("SELECT pg_backend_pid()"))


async def test_start_opens_min_size_and_a_released_connection_is_reused(
    pool: ConnectionPool,
) -> None:
    assert (pool.size, pool.idle) == (1, 1)
    conn = await pool.acquire(1)
    pid = await backend_pid(conn)
    pool.release(conn)
    again = await pool.acquire(1)
    assert again is conn and await backend_pid(again) == pid
    pool.release(again)
    assert (pool.size, pool.idle) == (1, 1)


async def test_never_more_than_max_size_and_a_waiter_gets_the_next_release(
    pool: ConnectionPool,
) -> None:
    first, second = await pool.acquire(1), await pool.acquire(1)
    assert pool.size == 2
    with pytest.raises(TimeoutError):
        await pool.acquire(0.05)
    waiting = asyncio.create_task(pool.acquire(5))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    pool.release(first)
    assert await waiting is first
    assert pool.size == 2
    pool.release(first)
    pool.release(second)
    assert (pool.size, pool.idle) == (2, 2)


async def test_waiters_are_served_in_arrival_order(pool: ConnectionPool) -> None:
    held = [await pool.acquire(1), await pool.acquire(1)]
    served: list[int] = []

    async def wait(n: int) -> None:
        conn = await pool.acquire(5)
        served.append(n)
        await asyncio.sleep(0)
        pool.release(conn)

    tasks = [asyncio.create_task(wait(n)) for n in range(5)]
    await asyncio.sleep(0.01)
    for conn in held:
        pool.release(conn)
    await asyncio.gather(*tasks)
    assert served == list(range(5))


async def sleeping(conn: Connection) -> int:
    """Statements still running ``pg_sleep`` on the server, other than ``conn``'s own."""
    return int(
        await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%'"
            " AND state = 'active' AND pid <> pg_backend_pid()"
        )
    )


@pytest.mark.parametrize("failure", ["cancelled", "timed out", "left in a transaction"])
async def test_a_session_in_doubt_is_never_handed_out_again(
    pool: ConnectionPool, failure: str, connect: Connect
) -> None:
    """Closed in the background: the abandoned statement is cancelled on the server, and the
    slot stays taken until the session is gone (never more sessions than max_size)."""
    conn = await pool.acquire(1)
    if failure == "left in a transaction":
        await conn.execute("BEGIN")
        pool.release(conn)
    elif failure == "cancelled":
        query = asyncio.create_task(conn.fetchval("SELECT pg_sleep(30)"))
        await asyncio.sleep(0.05)
        query.cancel()
        with pytest.raises(asyncio.CancelledError):
            await query
    else:
        with pytest.raises(TimeoutError):
            await conn.fetchval("SELECT pg_sleep(30)", timeout=0.05)
    if failure != "left in a transaction":
        pool.release(conn, reusable=False)
    assert pool.size == 1  # still counted while it closes
    fresh = await pool.acquire(5)
    assert fresh is not conn
    assert await fresh.fetchval("SELECT 1") == 1
    async with asyncio.timeout(5):  # its slot is freed once it is gone, well before 5 s
        while pool.size > 1 or not conn.is_closed():
            await asyncio.sleep(0.01)
    assert await sleeping(fresh) == 0  # cancelled, not left running
    pool.release(fresh)


async def test_a_freed_slot_goes_to_the_waiter_not_a_newcomer(connect: Connect) -> None:
    pool = ConnectionPool(connect, min_size=1, max_size=1)
    await pool.start()
    try:
        held = await pool.acquire(1)
        waiting = asyncio.create_task(pool.acquire(5))
        await asyncio.sleep(0.01)
        held.terminate()  # lost while in use
        pool.release(held)
        with pytest.raises(TimeoutError):
            await pool.acquire(0.05)  # the slot is the waiter's
        conn = await waiting
        assert pool.size == 1 and await conn.fetchval("SELECT 1") == 1
        pool.release(conn)
    finally:
        await pool.close()


async def test_a_connection_the_server_dropped_is_replaced(
    pool: ConnectionPool, connect: Connect
) -> None:
    conn = await pool.acquire(1)
    pid = await backend_pid(conn)
    pool.release(conn)
    admin = await connect()
    try:
        await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
    finally:
        await admin.close()
    for _ in range(100):  # the client notices the closed socket on its next loop turn
        if conn.is_closed():
            break
        await asyncio.sleep(0.01)
    fresh = await pool.acquire(1)
    assert await backend_pid(fresh) != pid
    pool.release(fresh)
    assert pool.size == 1


async def test_a_dropped_connection_frees_its_slot_for_a_waiter(pool: ConnectionPool) -> None:
    held = [await pool.acquire(1), await pool.acquire(1)]
    waiting = asyncio.create_task(pool.acquire(5))
    await asyncio.sleep(0.01)
    pool.release(held[0], reusable=False)  # closed in the background, then its slot is free
    conn = await waiting
    assert conn not in held and await conn.fetchval("SELECT 1") == 1
    pool.release(conn)
    pool.release(held[1])
    assert pool.size == 2


async def test_many_callers_with_short_timeouts_leak_nothing(pool: ConnectionPool) -> None:
    """Acquires that time out, get cancelled or fail in their block, racing releases: every
    slot comes back, and the pool never exceeds its size."""
    rng = random.Random(7)
    most = 0

    async def use(n: int) -> None:
        nonlocal most
        try:
            conn = await pool.acquire(rng.choice([0.001, 0.01, 1.0]))
        except TimeoutError:
            return
        most = max(most, pool.size)
        reusable = True
        try:
            await conn.fetchval("SELECT $1::int", n)
            await asyncio.sleep(rng.random() / 200)
            if n % 7 == 0:
                reusable = False
        finally:
            pool.release(conn, reusable=reusable)

    tasks = [asyncio.create_task(use(n)) for n in range(300)]
    await asyncio.sleep(0.02)
    for task in tasks[::11]:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert most <= 2
    async with asyncio.timeout(10):
        while pool.idle != pool.size:  # connections in doubt still closing
            await asyncio.sleep(0.01)
    assert pool.size <= 2
    conns = [await pool.acquire(1), await pool.acquire(1)]
    assert [await c.fetchval("SELECT 1") for c in conns] == [1, 1]
    for conn in conns:
        pool.release(conn)


async def test_close_waits_for_connections_in_use_then_refuses(connect: Connect) -> None:
    pool = ConnectionPool(connect, min_size=2, max_size=2)
    await pool.start()
    conn = await pool.acquire(1)
    waiter = asyncio.create_task(pool.acquire(5))
    await asyncio.sleep(0)
    other = await waiter  # the second idle one
    blocked = asyncio.create_task(pool.acquire(5))
    await asyncio.sleep(0.01)
    closing = asyncio.create_task(pool.close())
    await asyncio.sleep(0.01)
    with pytest.raises(asyncpg.InterfaceError):
        await blocked  # waiting when the close began
    assert not closing.done()
    with pytest.raises(asyncpg.InterfaceError):
        await pool.acquire(1)
    assert await conn.fetchval("SELECT 1") == 1  # in-flight work finishes
    pool.release(conn)
    pool.release(other)
    async with asyncio.timeout(5):
        await closing
    assert pool.size == 0 and conn.is_closed() and other.is_closed()


async def test_terminate_drops_connections_in_use(connect: Connect) -> None:
    pool = ConnectionPool(connect, min_size=1, max_size=1)
    await pool.start()
    conn = await pool.acquire(1)
    pool.terminate()
    assert conn.is_closed() and pool.size == 0
    pool.release(conn)  # a late release of a dropped connection is harmless
    assert pool.size == 0


async def test_a_failed_start_leaves_nothing_open(connect: Connect) -> None:
    calls = 0

    async def flaky() -> Connection:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise OSError("refused")
        return await connect()

    pool = ConnectionPool(flaky, min_size=3, max_size=3)
    with pytest.raises(OSError, match="refused"):
        await pool.start()
    assert pool.size == 0
