"""Feed writes and lists: posts, deletes, follows, likes, comments, author timelines.

* A post's fan-out lane is decided when it is created, from the author's follower count, and
  written with the post (an unpushed post makes its author a pull source in the same write).
* Follow backfills the followee's newest posts into the follower's timeline at once (bounded by
  the timeline cap, floored when truncated); unfollow and delete are purged asynchronously by the
  worker, and filtered at read time until then.
* Likes and comments publish a ``notify.requests`` record for the post's author (not for the
  author's own likes and comments), committed with the like or comment.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from fanout.accounts.model import UserId
from fanout.core.clock import Clock
from fanout.core.errors import Forbidden, Invalid, NotFound
from fanout.core.events import NotifyRequest
from fanout.core.log import Publish, Topics
from fanout.feed import events
from fanout.feed.cursor import decode_position, encode_position
from fanout.feed.model import Comment, Follow, NewPost, Position, Post, PostId
from fanout.feed.policy import FanoutPolicy, Lane
from fanout.feed.ports import FeedStores, PostStore, TimelineStore
from fanout.feed.reader import just_below

__all__ = ["FeedService", "FollowPage", "PostPage", "backfill"]

TEXT_MAX_CHARS = 5000
COMMENT_MAX_CHARS = 2000
MEDIA_MAX = 10
URL_MAX_CHARS = 2048
FOLLOWING_MAX = 5000  # bounds the per-read work of following everyone


@dataclass(frozen=True, slots=True)
class PostPage:
    posts: list[Post]
    liked: set[PostId]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class FollowPage:
    edges: list[Follow]
    next_cursor: str | None


def _problem(field: str, message: str) -> Invalid:
    return Invalid(message, details=[{"field": field, "message": message}])


def check_media(urls: Sequence[str]) -> tuple[str, ...]:
    if len(urls) > MEDIA_MAX:
        raise _problem("media_urls", f"at most {MEDIA_MAX} media URLs")
    for i, url in enumerate(urls):
        parts = urlsplit(url)
        if len(url) > URL_MAX_CHARS or parts.scheme not in {"http", "https"} or not parts.hostname:
            raise _problem(f"media_urls.{i}", "must be an http(s) URL with a host")
    return tuple(urls)


async def backfill(
    posts: PostStore, timelines: TimelineStore, follower: UserId, followee: UserId, cap: int
) -> None:
    """Add the followee's newest posts (at most ``cap``) to the follower's timeline; floored
    when truncated. Idempotent: the follow does it at once, the worker again after any purge
    that may have raced it."""
    entries = await posts.by_author(followee, None, cap)
    floor = just_below(entries[-1].position) if len(entries) >= cap else None
    if entries:
        await timelines.add(follower, entries, floor)


class FeedService:
    def __init__(
        self,
        stores: FeedStores,
        policy: FanoutPolicy,
        clock: Clock,
        next_id: Callable[[], int],
        *,
        timeline_cap: int = 800,
    ) -> None:
        self._posts = stores.posts
        self._follows = stores.follows
        self._timelines = stores.timelines
        self._policy = policy
        self._clock = clock
        self._next_id = next_id
        self._cap = timeline_cap

    # -- posts ---------------------------------------------------------------------------------

    async def create_post(self, author: UserId, text: str, media_urls: Sequence[str]) -> Post:
        if not text.strip() or len(text) > TEXT_MAX_CHARS:
            raise _problem("text", f"must be 1 to {TEXT_MAX_CHARS} characters, not all blank")
        media = check_media(media_urls)
        lane = self._policy.lane(await self._follows.follower_count(author))
        post = NewPost(PostId(self._next_id()), author, text, media, self._clock.now_ms())
        topic = events.FEED_POSTS_LOW if lane is Lane.LOW else Topics.FEED_POSTS
        created = events.PostCreated(post.id, author, post.created_ms, lane)
        return await self._posts.create(
            post, [events.publish(topic, author, created)], unpushed=lane is Lane.NONE
        )

    async def get_post(self, post_id: PostId) -> Post:
        post = (await self._posts.get_many([post_id])).get(post_id)
        if post is None or post.deleted:
            raise NotFound("post", post_id)
        return post

    async def delete_post(self, user: UserId, post_id: PostId) -> None:
        post = await self.get_post(post_id)
        if post.author_id != user:
            raise Forbidden("only the author deletes a post")
        deleted = events.PostDeleted(post.id, post.author_id)
        await self._posts.delete(post.id, [events.publish(Topics.FEED_POSTS, user, deleted)])

    async def user_posts(
        self, author: UserId, cursor: str | None, limit: int
    ) -> tuple[list[Post], str | None]:
        """The author's live posts, newest first, and the cursor of the next page."""
        entries = await self._posts.by_author(author, decode_position(cursor), limit)
        loaded = await self._posts.get_many([e.post_id for e in entries])
        posts = [loaded[e.post_id] for e in entries if e.post_id in loaded]
        last = entries[-1].position if len(entries) == limit else None
        return posts, encode_position(last) if last else None

    async def liked(self, viewer: UserId, posts: Sequence[Post]) -> set[PostId]:
        return await self._posts.liked(viewer, [p.id for p in posts]) if posts else set()

    # -- graph ---------------------------------------------------------------------------------

    async def follow(self, follower: UserId, followee: UserId) -> None:
        """Idempotent. ``followee`` must exist (the caller checks)."""
        if follower == followee:
            raise _problem("user_id", "you cannot follow yourself")
        if await self._follows.is_following(follower, followee):
            return
        if await self._follows.following_count(follower) >= FOLLOWING_MAX:
            raise _problem("user_id", f"you follow {FOLLOWING_MAX} accounts already")
        now = self._clock.now_ms()
        notice = NotifyRequest(
            f"follow:{follower}:{followee}:{now}", "new_follower", (followee,),
            {"follower_id": str(follower)},
        )  # fmt: skip
        followed = events.publish(
            Topics.FEED_FOLLOWS, follower, events.Followed(follower, followee)
        )
        if await self._follows.follow(follower, followee, now, [followed, notice.publish()]):
            await backfill(self._posts, self._timelines, follower, followee, self._cap)

    async def unfollow(self, follower: UserId, followee: UserId) -> None:
        unfollowed = events.Unfollowed(follower, followee)
        await self._follows.unfollow(
            follower, followee, [events.publish(Topics.FEED_FOLLOWS, follower, unfollowed)]
        )

    async def followers(self, user: UserId, cursor: str | None, limit: int) -> FollowPage:
        edges = await self._follows.followers(user, decode_position(cursor), limit)
        return FollowPage(edges, _follow_cursor(edges, limit))

    async def following(self, user: UserId, cursor: str | None, limit: int) -> FollowPage:
        edges = await self._follows.following(user, decode_position(cursor), limit)
        return FollowPage(edges, _follow_cursor(edges, limit))

    # -- likes and comments --------------------------------------------------------------------

    async def like(self, user: UserId, post_id: PostId) -> None:
        post = await self.get_post(post_id)
        notices: list[Publish] = []
        if post.author_id != user:
            notices.append(
                NotifyRequest(
                    f"like:{post.id}:{user}", "post_liked", (post.author_id,),
                    {"post_id": str(post.id), "user_id": str(user)},
                ).publish()
            )  # fmt: skip
        await self._posts.like(user, post.id, notices)

    async def unlike(self, user: UserId, post_id: PostId) -> None:
        post = await self.get_post(post_id)
        await self._posts.unlike(user, post.id)

    async def comment(self, user: UserId, post_id: PostId, text: str) -> Comment:
        if not text.strip() or len(text) > COMMENT_MAX_CHARS:
            raise _problem("text", f"must be 1 to {COMMENT_MAX_CHARS} characters, not all blank")
        post = await self.get_post(post_id)
        comment = Comment(self._next_id(), post.id, user, text, self._clock.now_ms())
        notices: list[Publish] = []
        if post.author_id != user:
            notices.append(
                NotifyRequest(
                    f"comment:{comment.id}", "post_commented", (post.author_id,),
                    {"post_id": str(post.id), "comment_id": str(comment.id),
                     "user_id": str(user)},
                ).publish()
            )  # fmt: skip
        return await self._posts.add_comment(comment, notices)

    async def comments(
        self, post_id: PostId, cursor: str | None, limit: int
    ) -> tuple[list[Comment], str | None]:
        await self.get_post(post_id)
        after = decode_position(cursor)
        found = await self._posts.comments(post_id, after.post_id if after else None, limit)
        last = found[-1] if len(found) == limit else None
        return found, encode_position(Position(last.created_ms, last.id)) if last else None


def _follow_cursor(edges: list[Follow], limit: int) -> str | None:
    if len(edges) < limit:
        return None
    return encode_position(Position(edges[-1].at_ms, edges[-1].user_id))
