"""The scaled router: chat routing topics over Redis pub/sub (the embedded one is in-process).

Each gateway process subscribes, on one dedicated connection, to the topics of its connections:
their channels, users and watched presences. A publish is one PUBLISH (a pipeline for many,
and for the publishes made while one is in flight, in the order made), and Redis hands it to
exactly the processes that hold an interested connection — none for a channel whose members
are all offline. Pub/sub does not keep messages: a process that was
disconnected misses what was published meanwhile, which its clients recover by ``resume``
(at-least-once by replay, as DESIGN.md §5.2 says); the hub fills gaps it notices from the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from fanout.core.errors import Unavailable
from fanout.core.passes import Passes
from fanout.storage.redis import keys

__all__ = ["RedisRouter"]

log = logging.getLogger(__name__)

RETRY_S = 0.5
CONFIRM_TIMEOUT_S = 5.0
PUBLISHES_PER_PASS = 256  # publishes in one pipeline at most (a blast's frames are ~0.3 KB)
CLOSE_GRACE_S = 1.0  # a publish in flight at close gets this long (a healthy one takes µs)
_PREFIX = keys.chat_route("")


class RedisRouter:
    """``prefix`` namespaces the topics (chat's routes by default); ``on_gap`` is called when
    the subscriber lost its connection, since whatever was published meanwhile is gone."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str = _PREFIX,
        on_gap: Callable[[], None] | None = None,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self.on_gap = on_gap
        # The subscriber gets its own connection without health checks: a health check is a
        # PING read by whichever call comes first, and subscribing while the listener reads
        # would then steal (and lose) the listener's messages.
        pool = client.connection_pool
        # No read timeout either: the listener blocks on the socket (a read abandoned by a
        # timeout half-way through a reply would lose the rest of it).
        options = {**pool.connection_kwargs, "health_check_interval": 0, "socket_timeout": None}
        self._subscriber = aioredis.Redis(
            connection_pool=aioredis.ConnectionPool(
                connection_class=pool.connection_class, max_connections=1, **options
            )
        )
        self._pubsub = self._subscriber.pubsub()
        self._confirming: dict[str, list[asyncio.Future[None]]] = {}
        self._handler: Callable[[str, bytes], None] | None = None
        self._listener: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        # One (un)subscribe at a time: redis-py's PubSub connects lazily, and two first calls
        # racing would each open a connection, one of which nobody reads.
        self._lock = asyncio.Lock()
        # Publishes made while one is in flight go together in the next pipeline: one round
        # trip (and one wake-up of Redis) for many. One pass at a time keeps them in order.
        self._publishes: Passes[tuple[str, bytes]] = Passes(
            self._publish_pass, most=PUBLISHES_PER_PASS, at_once=1
        )

    async def start(self, handler: Callable[[str, bytes], None]) -> None:
        self._handler = handler
        self._listener = asyncio.create_task(self._listen(), name="chat-router")

    async def publish(self, topic: str, payload: bytes) -> None:
        await self._publishes.submit([(topic, payload)])

    async def publish_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        await self._publishes.submit(items)

    async def _publish_pass(self, items: Sequence[tuple[str, bytes]]) -> None:
        """Publish in order: one PUBLISH, or a pipeline for many."""
        try:
            if len(items) == 1:
                topic, payload = items[0]
                await self._client.publish(self._prefix + topic, payload)
                return
            async with self._client.pipeline(transaction=False) as pipe:
                for topic, payload in items:
                    pipe.publish(self._prefix + topic, payload)
                await pipe.execute()
        except RedisError as exc:
            raise Unavailable(f"Redis refused a chat publish: {exc}") from exc

    async def subscribe(self, topics: Sequence[str]) -> None:
        """Subscribe and wait until Redis confirms: a publish from another connection right
        after this returns is then certain to arrive (Redis orders nothing across connections)."""
        if not topics:
            return
        names = [self._prefix + t for t in topics]
        loop = asyncio.get_running_loop()
        waiting = []
        for name in names:
            future: asyncio.Future[None] = loop.create_future()
            self._confirming.setdefault(name, []).append(future)
            waiting.append(future)
        try:
            async with self._lock:
                await self._pubsub.subscribe(*names)
            self._subscribed.set()
            await asyncio.wait_for(asyncio.gather(*waiting), CONFIRM_TIMEOUT_S)
        except (RedisError, TimeoutError) as exc:
            raise Unavailable(f"Redis did not confirm a chat subscription: {exc}") from exc
        finally:
            for name, future in zip(names, waiting, strict=True):
                pending = self._confirming.get(name, [])
                if future in pending:
                    pending.remove(future)
                if not pending:
                    self._confirming.pop(name, None)

    async def unsubscribe(self, topics: Sequence[str]) -> None:
        if topics:
            with contextlib.suppress(RedisError):  # a lost connection forgets them anyway
                async with self._lock:
                    await self._pubsub.unsubscribe(*(self._prefix + t for t in topics))

    async def close(self) -> None:
        await self._publishes.aclose(CLOSE_GRACE_S)
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self._pubsub.aclose()
        with contextlib.suppress(Exception):
            await self._subscriber.aclose()

    async def _listen(self) -> None:
        while True:
            await self._subscribed.wait()
            try:
                async for message in self._pubsub.listen():
                    self._dispatch(message)
            except (RedisError, OSError):
                log.warning("Redis pub/sub (%s) lost its connection; reconnecting", self._prefix)
                if self.on_gap is not None:
                    self.on_gap()
                await asyncio.sleep(RETRY_S)
            else:  # every topic was unsubscribed: wait for the next subscription
                self._subscribed.clear()

    def _dispatch(self, message: dict[str, object]) -> None:
        channel = message["channel"]
        name = channel.decode() if isinstance(channel, bytes) else str(channel)
        if message.get("type") == "subscribe":
            for future in self._confirming.pop(name, ()):
                if not future.done():
                    future.set_result(None)
        elif message.get("type") == "message" and self._handler is not None:
            data = message["data"]
            assert isinstance(data, bytes)
            self._handler(name[len(self._prefix) :], data)
