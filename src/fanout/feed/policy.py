"""Who gets a new post pushed, and when: the hybrid fan-out tiers (DESIGN.md §5.1)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["FanoutPolicy", "Lane"]


class Lane(enum.StrEnum):
    NOW = "now"  # pushed into every active follower's timeline right away
    LOW = "low"  # pushed on the low-priority lane, which never delays the first one
    NONE = "none"  # not pushed: readers pull the author's posts


@dataclass(frozen=True, slots=True)
class FanoutPolicy:
    strategy: str = "hybrid"  # hybrid | push | pull
    low_priority_from: int = 10_000
    pull_from: int = 1_000_000

    def lane(self, followers: int) -> Lane:
        """The lane of a post by an author with ``followers`` followers, decided at creation."""
        if self.strategy == "pull":
            return Lane.NONE
        if self.strategy == "push":
            return Lane.NOW
        if followers >= self.pull_from:
            return Lane.NONE
        if followers >= self.low_priority_from:
            return Lane.LOW
        return Lane.NOW
