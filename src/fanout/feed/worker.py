"""The fan-out worker: consumes ``feed.posts``, ``feed.posts.low`` and ``feed.follows``.

* A created post is pushed, in chunks of followers, into the timeline of every follower active
  within ``inactive_days`` (the others get their timeline rebuilt when they return), then offered
  live to the chunk's online followers. Pushing is idempotent, so a redelivered record (a worker
  killed mid-fan-out) re-pushes from the start and every timeline still holds the post once.
* Posts are fanned out in *passes* (:class:`Passes`): the posts that arrive, from any partition,
  while a pass runs go together in the next one, and a timeline that several of them reach is
  written once with all of its new entries. An idle worker sends a lone post at once; a
  backlog drains in large passes, where most of a timeline write's cost in Redis (reaching the
  key, the command) is shared by several entries.
* A deleted post is removed from its author's followers' timelines (reads already hide it).
* An unfollow removes the followee's recent posts from the follower's timeline.
The low lane is the same handler on its own topic, run by its own runner with passes of its
own, so it never takes the first lane's slots nor joins its passes (``bootstrap.py``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence

from fanout.accounts.model import UserId
from fanout.core.clock import Clock
from fanout.core.consumer import Subscription
from fanout.core.errors import Unavailable
from fanout.core.log import LogRecord, Topics
from fanout.core.passes import Passes
from fanout.feed import events
from fanout.feed.model import Post, PostId
from fanout.feed.policy import FanoutPolicy, Lane
from fanout.feed.ports import FeedStores, LiveFeed
from fanout.feed.service import backfill

__all__ = ["FanoutWorker", "NoLiveFeed"]

log = logging.getLogger(__name__)

GROUP = "feed-fanout"
CHUNK = 1_000  # followers of a post per query, at least (purges: exactly)
MAX_CHUNK = 10_000  # ... and at most
ROUND_WRITES = 512_000  # followers fetched, and timeline writes held, per round: ~50 MB
# Post records read per partition at once. A read batch's posts join the pass of every other
# partition's (:class:`Passes`).
FIRST_LANE_READ = 256
LOW_LANE_READ = 64
# Posts per pass. A pass of 512 posts of a few hundred followers writes each of 20 000
# timelines ~6 times in one ZADD.
POSTS_PER_PASS = 512
# Low lane: each post has thousands of followers, and the lane runs two handlers at once
# (``bootstrap.LOW_LANE_CONCURRENCY``): a pass per partition batch lets its two passes overlap.
LOW_POSTS_PER_PASS = LOW_LANE_READ
PASSES_AT_ONCE = 2  # one fetching followers while the other writes timelines
# Posts per follower query: a pass's queries run at once, each on its own pool connection.
TARGET_SLICE = 128


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
        self._passes = {
            lane: Passes(self.fan_out_many, most=most, at_once=PASSES_AT_ONCE)
            for lane, most in ((Lane.NOW, POSTS_PER_PASS), (Lane.LOW, LOW_POSTS_PER_PASS))
        }

    def subscriptions(self) -> tuple[list[Subscription], list[Subscription]]:
        """(first lane, low-priority lane) subscriptions."""
        first = [
            Subscription(Topics.FEED_POSTS, GROUP, self.handle, batch=FIRST_LANE_READ,
                         batch_handler=self.handle_batch),
            Subscription(Topics.FEED_FOLLOWS, GROUP, self.handle),
        ]  # fmt: skip
        low = Subscription(events.FEED_POSTS_LOW, GROUP, self.handle, batch=LOW_LANE_READ,
                           batch_handler=self.handle_batch)  # fmt: skip
        return first, [low]

    async def handle(self, record: LogRecord) -> None:
        event = events.decode(record.payload)
        if isinstance(event, events.PostCreated):
            if event.lane is not Lane.NONE:
                await self.fan_out_many([event])
        else:
            await self._apply(event)

    async def handle_batch(self, records: Sequence[LogRecord]) -> None:
        """One partition's records in order: each run of created posts joins a pass of its
        lane; anything else is handled alone, after the posts before it."""
        run: list[events.PostCreated] = []
        for record in records:
            event = events.decode(record.payload)
            if isinstance(event, events.PostCreated):
                if event.lane is not Lane.NONE:
                    run.append(event)
                continue
            await self._fan_out_run(run)
            run = []
            await self._apply(event)
        await self._fan_out_run(run)

    async def _fan_out_run(self, run: list[events.PostCreated]) -> None:
        """Posts of one partition, in order, through the passes of their lanes. A pass that
        failed (for any of its posts) is retried with only these posts, once, before the
        failure reaches the runner, which then handles the batch record by record."""
        start = 0
        for i in range(1, len(run) + 1):
            if i == len(run) or run[i].lane is not run[start].lane:
                try:
                    await self._passes[run[start].lane].submit(run[start:i])
                except Unavailable:
                    raise  # shutting down: the records go back to the log
                except Exception:
                    log.warning("a fan-out pass failed; retrying %d posts alone", i - start)
                    await self.fan_out_many(run[start:i])
                start = i

    async def close(self, grace_s: float) -> None:
        """After the runners stopped: let running passes finish for ``grace_s``, then cancel
        them (their records were not acknowledged: they are fanned out again)."""
        await asyncio.gather(*(passes.aclose(grace_s) for passes in self._passes.values()))

    async def _apply(self, event: events.FeedEvent) -> None:
        if isinstance(event, events.PostDeleted):
            await self._purge(event)
        elif isinstance(event, events.Unfollowed):
            await self._unfollowed(event)
        elif isinstance(event, events.Followed):
            await self._followed(event)

    async def fan_out_many(self, created: Sequence[events.PostCreated]) -> int:
        """Push each post to every active follower; the number of timeline writes. Followers
        come in chunks, fetched for every post at once: a round is a chunk of every post that
        has followers left. Rounds are pushed together, in one :meth:`push_many`, as long as
        the next would still fit in ``ROUND_WRITES`` followers, so a timeline that several
        posts reach is written once, the largest posts' followers included. Chunks are
        ``CHUNK`` long for a full pass, longer (up to ``MAX_CHUNK``) when fewer posts share a
        round."""
        found = await self._posts.get_many([PostId(e.post_id) for e in created])
        posts = [p for e in created if (p := found.get(PostId(e.post_id))) and not p.deleted]
        since = self._clock.now_ms() - self._inactive_ms
        written = 0
        fetched: list[tuple[Post, list[UserId]]] = []
        held = 0  # followers in ``fetched``
        after: list[UserId | None] = [None] * len(posts)
        while posts:
            size = min(MAX_CHUNK, max(CHUNK, ROUND_WRITES // len(posts)))
            starts = [(post.author_id, a) for post, a in zip(posts, after, strict=True)]
            parts = await asyncio.gather(*(
                self._follows.fanout_targets_many(starts[i : i + TARGET_SLICE], size, since)
                for i in range(0, len(starts), TARGET_SLICE)
            ))  # fmt: skip
            chunks = [chunk for part in parts for chunk in part]
            fetched += zip(posts, chunks, strict=True)
            held += sum(map(len, chunks))
            more = [i for i, chunk in enumerate(chunks) if len(chunk) == size]
            posts, after = [posts[i] for i in more], [chunks[i][-1] for i in more]
            next_size = min(MAX_CHUNK, max(CHUNK, ROUND_WRITES // max(len(posts), 1)))
            if posts and held + next_size * len(posts) <= ROUND_WRITES:
                continue
            written += await self._push(fetched)
            fetched, held = [], 0
        return written

    async def _push(self, fetched: list[tuple[Post, list[UserId]]]) -> int:
        await self._timelines.push_many([(post.entry, chunk) for post, chunk in fetched])
        for post, chunk in fetched:
            await self.live.offer(post, chunk)
        return sum(len(chunk) for _, chunk in fetched)

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
