"""What the feed writes to its own topics (keyed by author or follower, DESIGN.md §4)."""

from __future__ import annotations

import msgspec

from fanout.core.log import Publish
from fanout.feed.policy import Lane

__all__ = [
    "FEED_POSTS_LOW",
    "FeedEvent",
    "Followed",
    "PostCreated",
    "PostDeleted",
    "Unfollowed",
    "decode",
    "encode",
    "publish",
]

FEED_POSTS_LOW = "feed.posts.low"  # the low-priority fan-out lane (10k..1M followers)


class PostCreated(msgspec.Struct, tag="post", frozen=True):
    post_id: int
    author_id: int
    created_ms: int
    lane: Lane


class PostDeleted(msgspec.Struct, tag="delete", frozen=True):
    post_id: int
    author_id: int


class Followed(msgspec.Struct, tag="follow", frozen=True):
    follower_id: int
    followee_id: int


class Unfollowed(msgspec.Struct, tag="unfollow", frozen=True):
    follower_id: int
    followee_id: int


FeedEvent = PostCreated | PostDeleted | Followed | Unfollowed

_encoder = msgspec.msgpack.Encoder()
_decoder: msgspec.msgpack.Decoder[FeedEvent] = msgspec.msgpack.Decoder(FeedEvent)


def encode(event: FeedEvent) -> bytes:
    return _encoder.encode(event)


def decode(raw: bytes) -> FeedEvent:
    event: FeedEvent = _decoder.decode(raw)
    return event


def publish(topic: str, key: int, event: FeedEvent) -> Publish:
    return Publish(topic, str(key), encode(event))
