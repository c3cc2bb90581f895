"""Ranked mode: a score per candidate post, over a bounded window of the newest candidates.

score = recency + engagement + affinity + media, each weighted:
  recency    0.5 ** (age / half-life): 1 for a new post, 0.5 after ``HALF_LIFE_H``
  engagement log(1 + likes + 2·comments): a comment is worth two likes, with diminishing returns
  affinity   log(1 + viewer's past likes and comments on the author's posts)
  media      1 if the post carries media
Ties keep chronological order (newest first), so the ranking is deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from fanout.accounts.model import UserId
from fanout.feed.model import Post

__all__ = ["HALF_LIFE_H", "RANK_WINDOW", "Weights", "rank", "score"]

RANK_WINDOW = 200  # candidates ranked per snapshot: bounds the work of one ranked read
HALF_LIFE_H = 12.0  # a post's freshness halves every 12 hours
_MS_PER_H = 3_600_000


@dataclass(frozen=True, slots=True)
class Weights:
    recency: float = 2.0
    engagement: float = 0.4
    affinity: float = 0.6
    media: float = 0.2


def score(post: Post, now_ms: int, affinity: float, weights: Weights = Weights()) -> float:
    age_h = max(now_ms - post.created_ms, 0) / _MS_PER_H
    return (
        weights.recency * math.pow(0.5, age_h / HALF_LIFE_H)
        + weights.engagement * math.log1p(post.like_count + 2 * post.comment_count)
        + weights.affinity * math.log1p(affinity)
        + weights.media * (1.0 if post.media_urls else 0.0)
    )


def rank(posts: Sequence[Post], now_ms: int, affinity: Mapping[UserId, float]) -> list[Post]:
    """``posts`` (newest first) ordered by descending score; ties stay newest first."""
    scored = [
        (score(p, now_ms, affinity.get(p.author_id, 0.0)), -i, p) for i, p in enumerate(posts)
    ]
    scored.sort(key=lambda t: (t[0], t[1]), reverse=True)
    return [p for _, _, p in scored]
