"""The fan-out worker: consumes ``feed.posts``, ``feed.posts.low`` and ``feed.follows``.

* A created post is pushed, in chunks of followers, into the timeline of every follower active
  within ``inactive_days`` (the others get their timeline rebuilt when they return), then offered
  live to the chunk's online followers. Pushing is idempotent, so a redelivered record (a worker
  killed mid-fan-out) re-pushes from the start and every timeline still holds the post once.
* A deleted post is removed from its author's followers' timelines (reads already hide it).
* An unfollow removes the followee's recent posts from the follower's timeline.
The low lane is the same handler on its own topic, run by its own runner so it never takes the
first lane's slots (``bootstrap.py``).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from fanout.accounts.model import UserId
from fanout.core.clock import Clock
from fanout.core.consumer import Subscription
from fanout.core.log import LogRecord, Topics
from fanout.feed import events
from fanout.feed.model import Entry, PostId
from fanout.feed.policy import FanoutPolicy, Lane
from fanout.feed.ports import FeedStores, LiveFeed
from fanout.feed.service import backfill

__all__ = ["FanoutWorker", "NoLiveFeed"]

log = logging.getLogger(__name__)

CHUNK = 1_000  # followers per query and per push: bounds memory and one pipeline's size
GROUP = "feed-fanout"


class NoLiveFeed:
    """The live hook when no gateway runs in this process."""

    async def offer(self, post: object, followers: object) -> None:
        return None


class FanoutWorker:
    def __init__(
        self,
        stores: FeedStores,
        policy: FanoutPolicy,
        clock: Clock,
        live: LiveFeed | None = None,
        *,
        timeline_cap: int = 800,
        inactive_days: int = 30,
    ) -> None:
        self._posts = stores.posts
        self._follows = stores.follows
        self._timelines = stores.timelines
        self._policy = policy
        self._clock = clock
        self.live: LiveFeed = live or NoLiveFeed()
        self._cap = timeline_cap
        self._inactive_ms = inactive_days * 86_400_000

    def subscriptions(self) -> tuple[list[Subscription], list[Subscription]]:
        """(first lane, low-priority lane) subscriptions."""
        first = [
            Subscription(Topics.FEED_POSTS, GROUP, self.handle),
            Subscription(Topics.FEED_FOLLOWS, GROUP, self.handle),
        ]
        return first, [Subscription(events.FEED_POSTS_LOW, GROUP, self.handle, batch=10)]

    async def handle(self, record: LogRecord) -> None:
        event = events.decode(record.payload)
        if isinstance(event, events.PostCreated):
            if event.lane is not Lane.NONE:
                await self.fan_out(event)
        elif isinstance(event, events.PostDeleted):
            await self._purge(event)
        elif isinstance(event, events.Unfollowed):
            await self._unfollowed(event)
        elif isinstance(event, events.Followed):
            await self._followed(event)

    async def fan_out(self, event: events.PostCreated) -> int:
        """Push the post to every active follower; the number of timelines written."""
        post_id, author = PostId(event.post_id), UserId(event.author_id)
        post = (await self._posts.get_many([post_id])).get(post_id)
        if post is None or post.deleted:
            return 0  # deleted before its fan-out: nothing to show
        entry = Entry(post_id, event.created_ms)
        since = self._clock.now_ms() - self._inactive_ms
        written = 0
        async for chunk in self._targets(author, since):
            await self._timelines.push(entry, chunk)
            await self.live.offer(post, chunk)
            written += len(chunk)
        return written

    async def _targets(self, author: UserId, since: int) -> AsyncIterator[list[UserId]]:
        """The author's followers active since ``since``, in chunks; a short chunk is the last
        (no round trip to learn that the next one is empty)."""
        after: UserId | None = None
        while True:
            chunk = await self._follows.fanout_targets(author, after, CHUNK, since)
            if chunk:
                yield chunk
            if len(chunk) < CHUNK:
                return
            after = chunk[-1]

    async def _purge(self, event: events.PostDeleted) -> None:
        author = UserId(event.author_id)
        if self._policy.lane(await self._follows.follower_count(author)) is Lane.NONE:
            return  # never pushed (as far as the tier tells); reads filter it anyway
        async for chunk in self._targets(author, 0):
            await self._timelines.remove_everywhere(PostId(event.post_id), chunk)

    async def _followed(self, event: events.Followed) -> None:
        """The follow request backfilled already; an unfollow purge handled before this record
        (same key, so earlier) may have removed those posts again while the user re-followed:
        backfill once more. Idempotent."""
        follower, followee = UserId(event.follower_id), UserId(event.followee_id)
        if await self._follows.is_following(follower, followee):
            await backfill(self._posts, self._timelines, follower, followee, self._cap)

    async def _unfollowed(self, event: events.Unfollowed) -> None:
        follower, followee = UserId(event.follower_id), UserId(event.followee_id)
        if await self._follows.is_following(follower, followee):
            return  # followed again since: keep the posts
        recent = await self._posts.by_author(followee, None, self._cap)
        await self._timelines.remove(follower, [e.post_id for e in recent])
