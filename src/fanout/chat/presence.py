"""Announcing presence: a user's online and offline changes, published once on the user's
presence topic (``p<user>``) for every process whose connections watch that user.

Online is announced when a heartbeat finds the user had no live lease; offline only after
``OFFLINE_DEBOUNCE_S`` without a reconnect anywhere, so a flaky network or a page reload never
flickers; users whose leases expired (a dead process, a client that stopped pinging) are found
by a periodic sweep.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from fanout.accounts.model import UserId
from fanout.chat import frames
from fanout.chat.ports import PresenceStore, Router
from fanout.chat.routing import channel_payload
from fanout.core.clock import Clock
from fanout.core.times import iso

__all__ = ["OFFLINE_DEBOUNCE_S", "Announcer"]

OFFLINE_DEBOUNCE_S = 3.0  # a reconnect within this never shows as offline


class Announcer:
    def __init__(
        self,
        store: PresenceStore,
        router: Router,
        clock: Clock,
        node: str,
        ttl_ms: int,
        is_local: Callable[[UserId], bool],
    ) -> None:
        self._store = store
        self._router = router
        self._clock = clock
        self._node = node
        self._ttl_ms = ttl_ms
        self._is_local = is_local  # the user still has a connection in this process
        self._going_offline: dict[UserId, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def heartbeat(self, user: UserId) -> None:
        """Refresh this process's lease on ``user``; announce them if they were offline."""
        if await self._store.touch(user, self._node, self._ttl_ms):
            pending = self._going_offline.pop(user, None)
            if pending is not None:
                pending.cancel()  # back before anyone was told it left
            else:
                await self.announce(user, "online")

    async def left(self, user: UserId) -> None:
        """The user's last connection here closed: offline, unless they come back in time."""
        if await self._store.leave(user, self._node):
            previous = self._going_offline.pop(user, None)
            if previous is not None:
                previous.cancel()

            def fire() -> None:
                self._going_offline.pop(user, None)
                task = asyncio.get_running_loop().create_task(self._confirm_offline(user))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

            loop = asyncio.get_running_loop()
            self._going_offline[user] = loop.call_later(OFFLINE_DEBOUNCE_S, fire)

    async def _confirm_offline(self, user: UserId) -> None:
        if self._is_local(user):
            return
        with contextlib.suppress(Exception):  # presence is best effort; the sweep catches up
            if user not in await self._store.online([user]):
                await self.announce(user, "offline")

    async def announce(self, user: UserId, status: str) -> None:
        body = frames.encode(frames.PresenceFrame(str(user), status, iso(self._clock.now_ms())))
        await self._router.publish(f"p{user}", channel_payload(0, 0, "presence", user, body))

    async def run_forever(self, tick: Callable[[], None]) -> None:
        """Every third of the lease lifetime: ``tick`` (the caller's housekeeping), then announce
        users whose every lease expired as offline."""
        while True:
            await asyncio.sleep(max(self._ttl_ms / 3000, 0.05))
            tick()
            with contextlib.suppress(Exception):
                for user in await self._store.sweep():
                    await self.announce(user, "offline")

    async def close(self) -> None:
        for handle in self._going_offline.values():
            handle.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
