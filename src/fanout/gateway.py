"""What other products hand to the chat gateway: the one place feed and chat meet (wired by
``bootstrap``; products never import each other).

``GatewayFeed`` is the feed worker's ``LiveFeed``: a post goes as a ``feed_post`` frame to the
followers who are online — presence filters a chunk of followers in one call first, so fan-out
publishes nothing for the offline majority.
"""

from __future__ import annotations

from collections.abc import Sequence

from fanout.accounts.model import UserId
from fanout.chat.frames import encode
from fanout.chat.hub import Hub
from fanout.chat.ports import PresenceStore
from fanout.feed.model import Post
from fanout.feed.wire import FeedPostFrame, post_out

__all__ = ["GatewayFeed"]


class GatewayFeed:
    def __init__(self, hub: Hub, presence: PresenceStore) -> None:
        self._hub = hub
        self._presence = presence

    async def offer(self, post: Post, followers: Sequence[UserId]) -> None:
        online = await self._presence.online(followers)
        if online:
            frame = encode(FeedPostFrame(post_out(post, False)))
            await self._hub.to_users(sorted(online), frame)
