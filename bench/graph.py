"""The synthetic social graph of ``fanout bench feed``: who follows whom, the same for one seed.

Users are ids ``1..users``. Follower counts have two parts:

* a **lognormal body**, median :func:`median_followers` (200 from 4 000 users up), sigma 1, so
  the mean is ~1.65 x the median and a few percent of accounts have thousands of followers;
* a **tail of stars** at random ids: star rank r has ``(users - 1) * min(1, EVERYONE / r)``
  followers — the top ``EVERYONE`` accounts are followed by everyone (at ``--users 1000000`` plus
  the benchmark's reader, 1M followers), and the tail runs down to ``TAIL_END`` x the median
  (or a fifth of the users, on graphs too small for that).

Each account's followers are then drawn uniformly, without replacement, from everyone else. So
the follower counts are exactly the ones drawn, a user's followees come in proportion to their
popularity, and the edges come out sorted by (followee, follower): the primary-key order of the
``follows`` table of both stores, which makes bulk loading cheap.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "EVERYONE",
    "Posts",
    "Tiers",
    "background_posts",
    "edge_chunks",
    "follower_counts",
    "median_followers",
    "reader_followees",
    "summary",
    "tiers_for",
]

IntArray = npt.NDArray[np.int64]

MEDIAN = 200  # followers of the median account on a large network
SIGMA = 1.0  # lognormal shape of the body
EVERYONE = 12  # stars followed by every user; ranks up to 2 x EVERYONE have ≥ half of them
TAIL_END = 20  # the star tail stops at this many times the median
DESIGN_SCALE = 1_000_000  # from here on the tiers are DESIGN.md's 10 000 / 1 000 000


@dataclass(frozen=True, slots=True)
class Tiers:
    """Fan-out thresholds (``FanoutPolicy``) used for a graph of a given size."""

    low_priority_from: int
    pull_from: int


def tiers_for(users: int) -> Tiers:
    """DESIGN.md's defaults at a million users; below, thresholds that scale with the graph, so
    the ``2 x EVERYONE`` biggest stars (at least half of everyone) are pull-tier and the top few
    percent of the body are on the low lane."""
    if users >= DESIGN_SCALE:
        return Tiers(10_000, 1_000_000)
    return Tiers(max(10, users // 20), max(100, users // 2))


def median_followers(users: int) -> int:
    """200, or a twentieth of the users on graphs too small for that to make sense."""
    return max(1, min(MEDIAN, users // 20))


def follower_counts(users: int, seed: int) -> IntArray:
    """Followers of user ``i + 1`` at index ``i`` (each at most ``users - 1``)."""
    if users < 2:
        raise ValueError("a graph needs at least two users")
    rng = np.random.default_rng([seed, 0])
    median = median_followers(users)
    body = rng.lognormal(np.log(median), SIGMA, users)
    counts = np.minimum(np.rint(body), users - 1).astype(np.int64)
    ranks = np.arange(1, users + 1, dtype=np.float64)
    tail = np.rint((users - 1) * np.minimum(1.0, EVERYONE / ranks)).astype(np.int64)
    stars = int(np.count_nonzero(tail >= min(TAIL_END * median, (users - 1) // 5)))
    positions = rng.permutation(users)[:stars]
    counts[positions] = np.maximum(counts[positions], tail[:stars])
    return counts


def edge_chunks(
    counts: IntArray, seed: int, chunk_edges: int = 250_000
) -> Iterator[tuple[IntArray, IntArray]]:
    """(followee ids, follower ids) in chunks of about ``chunk_edges``, sorted by (followee,
    follower) across chunks; every follower is distinct from its followee."""
    rng = np.random.default_rng([seed, 1])
    users = len(counts)
    followees: list[IntArray] = []
    followers: list[IntArray] = []
    pending = 0
    for index, count in enumerate(counts.tolist()):
        if count <= 0:
            continue
        drawn = rng.choice(users - 1, size=count, replace=False, shuffle=False).astype(np.int64)
        drawn.sort()
        drawn += drawn >= index  # skip the followee itself: indexes 0..users-1 minus ``index``
        followers.append(drawn + 1)
        followees.append(np.full(count, index + 1, dtype=np.int64))
        pending += count
        if pending >= chunk_edges:
            yield np.concatenate(followees), np.concatenate(followers)
            followees, followers, pending = [], [], 0
    if pending:
        yield np.concatenate(followees), np.concatenate(followers)


def reader_followees(
    counts: IntArray, tiers: Tiers, seed: int, *, total: int = 200, pull_tier: int = 20
) -> IntArray:
    """Whom the benchmark's reader follows: the ``pull_tier`` biggest accounts (pull-tier once
    the reader follows them too), and ``total - pull_tier`` others drawn in proportion to their
    followers, as a real user's followees are. Ids ascending."""
    by_size = np.argsort(-counts, kind="stable")
    pull = by_size[:pull_tier]
    if int(counts[pull].min()) + 1 < tiers.pull_from:
        raise ValueError(f"the graph has fewer than {pull_tier} pull-tier accounts")
    rest = np.setdiff1d(np.arange(len(counts)), pull)
    rest = rest[counts[rest] + 1 < tiers.pull_from]
    weights = counts[rest].astype(np.float64) + 1.0
    rng = np.random.default_rng([seed, 2])
    others = rng.choice(rest, size=total - pull_tier, replace=False, p=weights / weights.sum())
    return np.sort(np.concatenate([pull, others])).astype(np.int64) + 1


def summary(counts: IntArray, tiers: Tiers, reader: IntArray) -> dict[str, Any]:
    """What the report says about the graph that ran, the reader's edges (``reader``: the ids
    it follows) included."""
    counts = counts.copy()
    counts[reader - 1] += 1
    quantiles = np.percentile(counts, [50, 90, 99, 99.9])
    return {
        "users": len(counts),
        "edges": int(counts.sum()),
        "followers_median": float(quantiles[0]),
        "followers_p90": float(quantiles[1]),
        "followers_p99": float(quantiles[2]),
        "followers_p999": float(quantiles[3]),
        "followers_mean": float(counts.mean()),
        "followers_max": int(counts.max()),
        "low_priority_from": tiers.low_priority_from,
        "pull_from": tiers.pull_from,
        "accounts_low_lane": int(
            np.count_nonzero((counts >= tiers.low_priority_from) & (counts < tiers.pull_from))
        ),
        "accounts_pull_tier": int(np.count_nonzero(counts >= tiers.pull_from)),
    }


@dataclass(frozen=True, slots=True)
class Posts:
    """Background posts, bulk-loaded: ids ``1..n`` (below any Snowflake), spread over a week."""

    ids: IntArray
    authors: IntArray
    created_ms: IntArray

    def __len__(self) -> int:
        return len(self.ids)


WEEK_MS = 7 * 86_400_000


def background_posts(users: int, posts: int, seed: int, now_ms: int) -> Posts:
    """``posts`` posts by authors drawn uniformly, created within the week before ``now_ms``."""
    rng = np.random.default_rng([seed, 3])
    return Posts(
        ids=np.arange(1, posts + 1, dtype=np.int64),
        authors=rng.integers(1, users + 1, posts, dtype=np.int64),
        created_ms=now_ms - rng.integers(60_000, WEEK_MS, posts, dtype=np.int64),
    )
