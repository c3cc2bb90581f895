"""PostgreSQL adapters of the feed's PostStore and FollowStore (``fanout.feed.ports``).

Each write that carries ``events`` appends them to the outbox (:mod:`.outbox`) in its own
transaction, so the write and its log records commit together, as in embedded mode. Counters
(likes, comments, followers, following) and affinity change in the same transaction as the row
they count, and only when that row really changed, so retries never count twice.

Every list is one index range scan in the order returned (see ``0003_feed.sql``). ``before`` and
``after`` are exclusive; ``None`` is mapped to a sentinel beyond every real value rather than to
a different query, so one prepared statement (and its plan) serves every page.

The stores live in :mod:`.feed_posts` and :mod:`.feed_follows`; this module names them.
"""

from __future__ import annotations

from fanout.storage.postgres.feed_follows import PostgresFollowStore
from fanout.storage.postgres.feed_posts import PostgresPostStore

__all__ = ["PostgresFollowStore", "PostgresPostStore"]
