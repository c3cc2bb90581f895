"""Contract of PostStore on every backend."""

from __future__ import annotations

import pytest

from fanout.accounts.model import UserId
from fanout.core.errors import NotFound
from fanout.core.log import Publish
from fanout.core.partition import partition_for
from fanout.feed.model import Comment, Entry, NewPost, Position, PostId
from tests.contract.conftest import PARTITIONS, FeedUnderTest

BASE_ID = 2**60  # ids above 2**53 catch any float or JS-number round trip
A, B, C = UserId(BASE_ID + 1), UserId(BASE_ID + 2), UserId(BASE_ID + 3)


def new_post(n: int, author: UserId = A, ms: int | None = None, media: int = 0) -> NewPost:
    return NewPost(
        id=PostId(BASE_ID + 1000 + n),
        author_id=author,
        text=f"post {n} ✓",
        media_urls=tuple(f"https://img.example/{n}/{i}.png" for i in range(media)),
        created_ms=1_767_225_600_000 + n * 1000 if ms is None else ms,
    )


async def events_of(feed: FeedUnderTest, topic: str, key: str) -> list[bytes]:
    await feed.flush_events()
    records = await feed.log.read(topic, "inspect", "c", partition_for(key, PARTITIONS), 100)
    return [r.payload for r in records]


async def test_create_and_get_many_round_trip(feed: FeedUnderTest) -> None:
    created = await feed.posts.create(new_post(1, media=2), [])
    assert created.like_count == 0 and created.comment_count == 0 and not created.deleted
    got = await feed.posts.get_many([created.id, PostId(42), created.id])
    assert list(got) == [created.id]
    post = got[created.id]
    assert post == created
    assert post.text == "post 1 ✓" and len(post.media_urls) == 2 and post.author_id == A


async def test_events_commit_with_the_post(feed: FeedUnderTest) -> None:
    event = Publish("feed.posts", str(A), b"created-1")
    await feed.posts.create(new_post(1), [event])
    assert await events_of(feed, "feed.posts", str(A)) == [b"created-1"]


async def test_delete_marks_the_post_and_hides_it_from_author_lists(feed: FeedUnderTest) -> None:
    for n in range(3):
        await feed.posts.create(new_post(n), [])
    target = PostId(BASE_ID + 1001)
    assert await feed.posts.delete(target, [Publish("feed.posts", str(A), b"deleted")])
    assert not await feed.posts.delete(target, [Publish("feed.posts", str(A), b"again")])
    assert not await feed.posts.delete(PostId(7), [])
    assert (await feed.posts.get_many([target]))[target].deleted
    listed = await feed.posts.by_author(A, None, 10)
    assert [e.post_id for e in listed] == [BASE_ID + 1002, BASE_ID + 1000]
    assert await events_of(feed, "feed.posts", str(A)) == [b"deleted"]


async def test_author_lists_page_newest_first_with_ties_broken_by_id(feed: FeedUnderTest) -> None:
    same_ms = 1_767_225_600_000
    posts = [new_post(n, ms=same_ms + (n // 3)) for n in range(10)]  # three per millisecond
    for post in reversed(posts):
        await feed.posts.create(post, [])
    expected = sorted((Entry(p.id, p.created_ms) for p in posts), key=lambda e: e.position,
                      reverse=True)  # fmt: skip
    seen: list[Entry] = []
    before: Position | None = None
    while page := await feed.posts.by_author(A, before, 4):
        seen += page
        before = page[-1].position
    assert seen == expected


async def test_by_authors_merges_several_authors(feed: FeedUnderTest) -> None:
    for n in range(12):
        await feed.posts.create(new_post(n, author=[A, B, C][n % 3]), [])
    merged = await feed.posts.by_authors([A, C], None, 100)
    assert [e.post_id - BASE_ID - 1000 for e in merged] == [n for n in reversed(range(12))
                                                            if n % 3 != 1]  # fmt: skip
    page = await feed.posts.by_authors([A, C], Position(merged[2].score_ms, merged[2].post_id), 2)
    assert page == merged[3:5]
    assert await feed.posts.by_authors([], None, 10) == []


async def test_likes_are_idempotent_counted_and_produce_events_once(feed: FeedUnderTest) -> None:
    post = await feed.posts.create(new_post(1), [])
    event = Publish("notify.requests", "like-1", b"liked")
    assert await feed.posts.like(B, post.id, [event])
    assert not await feed.posts.like(B, post.id, [event])
    assert await feed.posts.like(C, post.id, [])
    assert (await feed.posts.get_many([post.id]))[post.id].like_count == 2
    assert await feed.posts.liked(B, [post.id, PostId(5)]) == {post.id}
    assert await feed.posts.unlike(B, post.id)
    assert not await feed.posts.unlike(B, post.id)
    assert (await feed.posts.get_many([post.id]))[post.id].like_count == 1
    assert await feed.posts.liked(B, [post.id]) == set()
    assert await events_of(feed, "notify.requests", "like-1") == [b"liked"]


async def test_comments_count_page_oldest_first_and_feed_affinity(feed: FeedUnderTest) -> None:
    post = await feed.posts.create(new_post(1), [])
    for n in range(5):
        comment = Comment(BASE_ID + 5000 + n, post.id, B if n % 2 else C, f"c{n}", 1000 + n)
        assert await feed.posts.add_comment(comment, []) == comment
    assert (await feed.posts.get_many([post.id]))[post.id].comment_count == 5
    first = await feed.posts.comments(post.id, None, 3)
    rest = await feed.posts.comments(post.id, first[-1].id, 3)
    assert [c.text for c in first + rest] == ["c0", "c1", "c2", "c3", "c4"]
    await feed.posts.like(B, post.id, [])
    affinity = await feed.posts.affinity(B, [A, C])
    assert affinity.get(A, 0) == 3.0 and affinity.get(C, 0) == 0  # two comments and a like
    assert (await feed.posts.affinity(C, [A]))[A] == 3.0


async def test_unpushed_posts_make_their_author_a_pull_source(feed: FeedUnderTest) -> None:
    await feed.posts.create(new_post(1, author=A), [])
    await feed.posts.create(new_post(2, author=B), [], unpushed=True)
    await feed.posts.create(new_post(3, author=B), [])  # later pushed posts do not undo it
    viewer, loner = UserId(A + 100), UserId(A + 101)
    for followee in (A, B, C):
        await feed.follows.follow(viewer, followee, 1, [])
    await feed.follows.follow(loner, A, 1, [])
    assert await feed.follows.following_and_pull(viewer) == ({A, B, C}, {B})
    assert await feed.follows.following_and_pull(loner) == ({A}, set())
    assert await feed.follows.following_and_pull(UserId(A + 102)) == (set(), set())


async def test_likes_and_comments_on_unknown_posts_store_nothing(feed: FeedUnderTest) -> None:
    ghost = PostId(BASE_ID + 999)
    with pytest.raises(NotFound):
        await feed.posts.like(B, ghost, [Publish("notify.requests", "ghost", b"x")])
    with pytest.raises(NotFound):
        await feed.posts.add_comment(Comment(BASE_ID + 7000, ghost, B, "c", 1), [])
    assert await feed.posts.liked(B, [ghost]) == set()
    assert await feed.posts.comments(ghost, None, 10) == []
    assert await events_of(feed, "notify.requests", "ghost") == []
