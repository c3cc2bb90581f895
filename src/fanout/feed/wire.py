"""The feed's wire form of a post, shared by the HTTP answers and the gateway's ``feed_post``
frames (API.md "Feed" and "WebSocket")."""

from __future__ import annotations

import msgspec

from fanout.core.times import iso
from fanout.feed.model import Post

__all__ = ["FeedPostFrame", "PostOut", "post_out"]


class PostOut(msgspec.Struct):
    id: str
    author_id: str
    text: str
    media_urls: list[str]
    created_at: str
    like_count: int
    comment_count: int
    liked_by_me: bool


class FeedPostFrame(msgspec.Struct, tag_field="type", tag="feed_post"):
    post: PostOut


def post_out(post: Post, liked: bool) -> PostOut:
    return PostOut(
        str(post.id), str(post.author_id), post.text, list(post.media_urls),
        iso(post.created_ms), post.like_count, post.comment_count, liked,
    )  # fmt: skip
