"""The synthetic graph of ``fanout bench feed``: a realistic follower distribution, exactly the
edges it promises, the reader it describes, and the same graph for the same seed."""

from __future__ import annotations

import numpy as np

from bench import graph

USERS = 5_000


def edges(counts: graph.IntArray, seed: int) -> tuple[graph.IntArray, graph.IntArray]:
    chunks = list(graph.edge_chunks(counts, seed, chunk_edges=100_000))
    return np.concatenate([c[0] for c in chunks]), np.concatenate([c[1] for c in chunks])


def test_followers_have_a_median_near_200_and_a_long_tail() -> None:
    counts = graph.follower_counts(USERS, seed=7)
    assert 170 <= np.median(counts) <= 230
    assert counts.min() >= 0 and counts.max() == USERS - 1  # nobody follows themselves
    assert np.count_nonzero(counts == USERS - 1) >= graph.EVERYONE  # followed by everyone
    assert np.count_nonzero(counts >= USERS // 2) >= 2 * graph.EVERYONE
    assert np.percentile(counts, 99) > 5 * np.median(counts)  # heavy tail, beyond the stars
    assert counts.mean() < 3 * np.median(counts)  # ... yet most of the mass is the body


def test_edges_match_the_counts_without_self_follows_or_duplicates() -> None:
    counts = graph.follower_counts(USERS, seed=7)
    followees, followers = edges(counts, seed=7)
    assert len(followees) == counts.sum()
    assert np.array_equal(np.bincount(followees, minlength=USERS + 1)[1:], counts)
    assert not np.any(followees == followers)
    assert followers.min() >= 1 and followers.max() <= USERS
    keys = followees * (USERS + 1) + followers
    assert np.all(np.diff(keys) > 0)  # sorted by (followee, follower), hence no duplicates


def test_the_reader_follows_200_of_which_20_are_pull_tier() -> None:
    counts = graph.follower_counts(USERS, seed=7)
    tiers = graph.tiers_for(USERS)
    followees = graph.reader_followees(counts, tiers, seed=7)
    assert len(np.unique(followees)) == 200
    assert np.count_nonzero(counts[followees - 1] + 1 >= tiers.pull_from) == 20
    assert graph.tiers_for(1_000_000) == graph.Tiers(10_000, 1_000_000)  # DESIGN.md's defaults


def test_the_same_seed_gives_the_same_graph() -> None:
    a, b = graph.follower_counts(USERS, seed=1), graph.follower_counts(USERS, seed=1)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, graph.follower_counts(USERS, seed=2))
    for left, right in zip(edges(a, seed=1), edges(b, seed=1), strict=True):
        assert np.array_equal(left, right)
    posts = graph.background_posts(USERS, 1_000, seed=1, now_ms=10**12)
    again = graph.background_posts(USERS, 1_000, seed=1, now_ms=10**12)
    assert np.array_equal(posts.authors, again.authors)
    assert np.array_equal(posts.created_ms, again.created_ms)
