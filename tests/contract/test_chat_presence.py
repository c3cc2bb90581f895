"""Contract of chat's PresenceStore on every backend.

Leases here are either long (a minute: they cannot lapse during a test) or short (``SHORT_MS``,
then ``wait_ms(PAST_SHORT_MS)``: on Redis that is real time, in memory a manual clock).
"""

from __future__ import annotations

import asyncio

from fanout.accounts.model import UserId
from tests.contract.conftest import CHAT_BASE_ID, PresenceUnderTest

LONG_MS = 60_000
SHORT_MS = 150
PAST_SHORT_MS = 300
A, B, C = (UserId(CHAT_BASE_ID + n) for n in range(3))


async def test_touch_reports_only_the_offline_to_online_transition(
    presence: PresenceUnderTest,
) -> None:
    store, _ = presence.stores
    assert await store.touch(A, "n1", LONG_MS)
    assert not await store.touch(A, "n1", LONG_MS)
    assert not await store.touch(A, "n2", LONG_MS)
    assert await store.online([A, B]) == {A}
    assert await store.touch(B, "n1", LONG_MS)
    assert await store.online([A, B, C, A]) == {A, B}
    assert await store.online([]) == set()


async def test_a_user_stays_online_while_any_node_holds_a_lease(
    presence: PresenceUnderTest,
) -> None:
    one, two = presence.stores
    await one.touch(A, "n1", LONG_MS)
    await two.touch(A, "n2", LONG_MS)
    assert not await one.leave(A, "n1")
    assert await two.online([A]) == {A}
    assert not await one.leave(A, "n1")  # again: still online through n2
    assert await two.leave(A, "n2")
    assert await one.online([A]) == set()
    assert not await two.leave(A, "n2")  # the offline transition is reported once
    assert not await one.leave(B, "n1")  # never online
    assert await one.touch(A, "n1", LONG_MS)  # back: a new transition
    assert await one.sweep() == []


async def test_leases_lapse_and_sweep_reports_each_user_once(
    presence: PresenceUnderTest,
) -> None:
    one, two = presence.stores
    await one.touch(A, "n1", SHORT_MS)
    await one.touch(B, "n1", SHORT_MS)
    await two.touch(B, "n2", LONG_MS)  # B lives on through n2
    await two.touch(C, "n2", LONG_MS)
    await presence.wait_ms(PAST_SHORT_MS)
    assert await one.online([A, B, C]) == {B, C}
    assert await one.sweep() == [A]
    assert await two.sweep() == []
    assert await one.sweep() == []
    assert not await one.leave(A, "n1")  # swept: already reported offline
    assert await one.touch(A, "n1", LONG_MS)
    assert not await one.leave(B, "n1")  # n1's lease on B lapsed; n2's holds
    assert await two.online([A, B, C]) == {A, B, C}


async def test_an_expired_but_unswept_user_comes_back_online(
    presence: PresenceUnderTest,
) -> None:
    store, _ = presence.stores
    await store.touch(A, "n1", SHORT_MS)
    await presence.wait_ms(PAST_SHORT_MS)
    assert await store.online([A]) == set()
    assert await store.touch(A, "n2", LONG_MS)  # was offline, though not swept
    assert await store.sweep() == []
    assert await store.online([A]) == {A}
    assert await store.leave(A, "n2")


async def test_leave_keeps_the_remaining_lease_as_the_expiry(presence: PresenceUnderTest) -> None:
    store, _ = presence.stores
    await store.touch(A, "n1", SHORT_MS)
    await store.touch(A, "n2", LONG_MS)
    assert not await store.leave(A, "n2")  # drops the latest lease; n1's short one remains
    assert await store.online([A]) == {A}
    await presence.wait_ms(PAST_SHORT_MS)
    assert await store.online([A]) == set()
    assert await store.sweep() == [A]
    assert not await store.leave(A, "n1")


async def test_concurrent_sweepers_split_the_expired_users(presence: PresenceUnderTest) -> None:
    one, two = presence.stores
    users = [UserId(CHAT_BASE_ID + 1000 + n * 7) for n in range(120)]  # spread over every shard
    for user in users:
        await one.touch(user, "n1", SHORT_MS)
    await two.touch(C, "n2", LONG_MS)
    await presence.wait_ms(PAST_SHORT_MS)
    sweeps = await asyncio.gather(*(s.sweep() for s in (one, two, one, two)))
    swept = [u for batch in sweeps for u in batch]
    assert sorted(swept) == sorted(users)  # each once, to one sweeper
    assert await one.online([*users, C]) == {C}
