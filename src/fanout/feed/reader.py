"""Reading the feed: timeline + pulled authors, merged newest first, filtered, enriched.

Why a read is exact — every live post of every followee, newest first, no repeats, no skips:

* **S1, the timeline** holds pushed posts. It is complete strictly above its floor (the store
  guarantees it), except while stale; a stale or missing timeline is not used (see below).
* **S2, pull sources**: followees that ever published an unpushed post (pull tier, or the
  ``pull`` strategy) are read from the post store directly, whatever the timeline holds.
* **S3, the rest below the timeline**: once S1 runs out, every other followee is pulled from
  where S1 ended. So a trimmed, floored or half-built timeline costs speed, never posts.

Posts of authors no longer followed and deleted posts are filtered here, so correctness never
waits for the asynchronous purge. A position cursor (score, id) is exclusive, and new posts are
always newer than it, so paging never repeats or skips a post.

A timeline that was never built, or whose owner was idle longer than ``inactive_days`` (fan-out
skipped them), is marked unbuilt, and its owner touched *before* it is rebuilt from pull in the
background: a post fanned out after the touch reaches the timeline, one created before it is in
the rebuild. Meanwhile reads pull everything (S3 only) and are still exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

from fanout.accounts.model import UserId
from fanout.core import base62
from fanout.core.clock import Clock
from fanout.core.errors import Invalid
from fanout.feed.cursor import decode_position, decode_ranked, encode_position, encode_ranked
from fanout.feed.merge import Chain, Source, Stream, newest_first
from fanout.feed.model import Entry, Position, Post, PostId
from fanout.feed.ports import FeedStores
from fanout.feed.ranking import RANK_WINDOW, rank

__all__ = ["FeedPage", "FeedReader", "just_below"]

log = logging.getLogger(__name__)

TOUCH_EVERY_MS = 3_600_000  # activity is recorded at most hourly: idle is measured in days
SNAPSHOT_TTL_S = 900  # a ranked snapshot pages stably for 15 minutes
REBUILD_QUEUE = 1_000  # rebuilds waiting; past it a request is dropped (the next read retries)
_EXTRA = 8  # candidates fetched beyond the page, to absorb filtered ones in one round


def just_below(position: Position) -> Position:
    """The floor that keeps ``position`` itself but nothing older."""
    return Position(position.score_ms, position.post_id - 1)


@dataclass(frozen=True, slots=True)
class FeedPage:
    posts: list[Post]
    liked: set[PostId]
    next_cursor: str | None


class FeedReader:
    def __init__(
        self,
        stores: FeedStores,
        clock: Clock,
        next_id: Callable[[], int],
        *,
        timeline_cap: int = 800,
        inactive_days: int = 30,
    ) -> None:
        self._posts = stores.posts
        self._follows = stores.follows
        self._timelines = stores.timelines
        self._snapshots = stores.snapshots
        self._clock = clock
        self._next_id = next_id
        self._cap = timeline_cap
        self._inactive_ms = inactive_days * 86_400_000
        self._queue: asyncio.Queue[UserId] = asyncio.Queue(REBUILD_QUEUE)
        self._queued: set[UserId] = set()

    async def read(self, viewer: UserId, cursor: str | None, limit: int, mode: str) -> FeedPage:
        # Independent round trips overlap: the read's latency is its longest chain, not a sum.
        (following, pull), usable = await asyncio.gather(
            self._follows.following_and_pull(viewer), self._timeline_usable(viewer)
        )
        if mode == "ranked":
            return await self._ranked(viewer, following, pull, cursor, limit, usable)
        liked: set[PostId] = set()
        posts = await self.collect(
            viewer, following, pull, decode_position(cursor), limit, usable, liked=liked
        )
        last = posts[-1].entry.position if len(posts) == limit else None
        return FeedPage(posts, liked & {p.id for p in posts},
                        encode_position(last) if last else None)  # fmt: skip

    async def collect(
        self,
        viewer: UserId,
        following: set[UserId],
        pull: set[UserId],
        before: Position | None,
        limit: int,
        use_timeline: bool,
        *,
        liked: set[PostId] | None = None,
    ) -> list[Post]:
        """Up to ``limit`` live posts by ``following``, strictly older than ``before``, of
        which ``pull`` are the pull sources; the ones ``viewer`` likes are added to ``liked``
        when given (fetched alongside)."""
        if not following or limit <= 0:
            return []
        batch = limit + _EXTRA
        streams: list[Stream]
        if use_timeline:

            def page(b: Position | None, n: int) -> Awaitable[list[Entry]]:
                return self._timelines.page(viewer, b, n)

            first = await page(before, batch)
            others = list(following - pull)
            s3 = self._pull(others, batch)
            s1 = Source(page, before, batch, first)
            streams = [Chain(s1, s3)]
            if pull:
                streams.append(self._pull(list(pull), batch)(before))
        else:
            streams = [self._pull(list(following), batch)(before)]
        out: list[Post] = []
        merged = newest_first(streams)
        while len(out) < limit:
            candidates = await _take(merged, batch - len(out))
            if not candidates:
                break
            ids = [e.post_id for e in candidates]
            if liked is None:
                loaded = await self._posts.get_many(ids)
            else:
                loaded, likes = await asyncio.gather(
                    self._posts.get_many(ids), self._posts.liked(viewer, ids)
                )
                liked |= likes
            for entry in candidates:
                post = loaded.get(entry.post_id)
                if post is not None and not post.deleted and post.author_id in following:
                    out.append(post)
                    if len(out) == limit:
                        break
        return out

    def _pull(self, authors: Sequence[UserId], batch: int) -> Callable[[Position | None], Source]:
        def start(at: Position | None) -> Source:
            return Source(lambda b, n: self._posts.by_authors(authors, b, n), at, batch)

        return start

    async def _ranked(
        self,
        viewer: UserId,
        following: set[UserId],
        pull: set[UserId],
        cursor: str | None,
        limit: int,
        usable: bool,
    ) -> FeedPage:
        # One snapshot per viewer, tagged with its id as its first element: a viewer's new
        # ranked read replaces their previous one, and nobody can evict anybody else's.
        key = str(viewer)
        if cursor:
            snapshot, offset = decode_ranked(cursor)
            stored = await self._snapshots.get(key)
            if not stored or base62.encode(stored[0]) != snapshot:
                raise Invalid(
                    "the ranked snapshot expired; read from the start again",
                    details=[{"field": "cursor", "message": "expired"}],
                )
            ids = stored[1:]
            loaded = await self._posts.get_many(ids[offset : offset + limit])
            window = [loaded[i] for i in ids[offset : offset + limit] if i in loaded]
            page = [p for p in window if not p.deleted and p.author_id in following]
        else:
            candidates = await self.collect(viewer, following, pull, None, RANK_WINDOW, usable)
            affinity = await self._posts.affinity(viewer, list({p.author_id for p in candidates}))
            ranked = rank(candidates, self._clock.now_ms(), affinity)
            tag, offset = self._next_id(), 0
            snapshot = base62.encode(tag)
            ids = [p.id for p in ranked]
            await self._snapshots.put(key, [PostId(tag), *ids], SNAPSHOT_TTL_S)
            page = ranked[:limit]
        more = offset + limit < len(ids)
        return FeedPage(page, await self._liked(viewer, page),
                        encode_ranked(snapshot, offset + limit) if more else None)  # fmt: skip

    async def _liked(self, viewer: UserId, posts: list[Post]) -> set[PostId]:
        return await self._posts.liked(viewer, [p.id for p in posts]) if posts else set()

    # -- cold start ----------------------------------------------------------------------------

    async def _timeline_usable(self, viewer: UserId) -> bool:
        now = self._clock.now_ms()
        built, last = await asyncio.gather(
            self._timelines.built_at(viewer), self._follows.last_active(viewer)
        )
        stale = last is not None and last < now - self._inactive_ms
        if built is not None and not stale:
            if last is None or last < now - TOUCH_EVERY_MS:
                await self._follows.touch(viewer, now)
            return True
        if built is not None:
            await self._timelines.mark_built(viewer, None)
        await self._follows.touch(viewer, now)  # before the rebuild reads: see the docstring
        self.request_rebuild(viewer)
        return False

    def request_rebuild(self, viewer: UserId) -> None:
        if viewer in self._queued:
            return
        with contextlib.suppress(asyncio.QueueFull):  # the next read asks again
            self._queue.put_nowait(viewer)
            self._queued.add(viewer)

    async def rebuild(self, viewer: UserId) -> None:
        """Fill the timeline from pull (newest ``cap`` posts of every followee), then mark it."""
        now = self._clock.now_ms()
        following = await self._follows.following_ids(viewer)
        entries = await self._posts.by_authors(list(following), None, self._cap)
        floor = just_below(entries[-1].position) if len(entries) >= self._cap else None
        await self._timelines.add(viewer, entries, floor)
        await self._timelines.mark_built(viewer, now)

    async def run_rebuilds(self) -> None:
        """Background loop: rebuild requested timelines one at a time (started by bootstrap)."""
        while True:
            viewer = await self._queue.get()
            try:
                await self.rebuild(viewer)
            except Exception:  # the owner's next read requests it again
                log.exception("rebuilding the timeline of %d failed", viewer)
            finally:
                self._queued.discard(viewer)
                self._queue.task_done()

    async def rebuilds_done(self) -> None:
        """Wait until every requested rebuild has finished (tests, benchmarks)."""
        await self._queue.join()

    async def process_rebuilds(self) -> int:
        """Run the requested rebuilds now, in this task (for callers without the loop)."""
        done = 0
        while not self._queue.empty():
            viewer = self._queue.get_nowait()
            try:
                await self.rebuild(viewer)
                done += 1
            finally:
                self._queued.discard(viewer)
                self._queue.task_done()
        return done

    async def timeline_ready(self, viewer: UserId) -> bool:
        """True when reads of ``viewer`` use the timeline (built, and its owner not idle)."""
        built = await self._timelines.built_at(viewer)
        last = await self._follows.last_active(viewer)
        return built is not None and (last is None or
                                      last >= self._clock.now_ms() - self._inactive_ms)  # fmt: skip


async def _take(stream: AsyncIterator[Entry], n: int) -> list[Entry]:
    """Up to ``n`` entries from ``stream``, leaving it open for more."""
    out: list[Entry] = []
    for _ in range(n):
        try:
            out.append(await anext(stream))
        except StopAsyncIteration:
            break
    return out
