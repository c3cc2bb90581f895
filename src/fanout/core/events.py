"""Records that cross product boundaries through the log (products never import each other).

A notification request is what any product publishes to ``notify.requests`` when a user should
hear about something (a like, a comment, a chat message while offline); the notification
service consumes it. The format is JSON so that outside producers can write it too.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fanout.core.log import Publish, Topics

__all__ = ["NotifyRequest", "recipients"]


@dataclass(frozen=True, slots=True)
class NotifyRequest:
    """``event_id`` makes it idempotent: the same id twice notifies once."""

    event_id: str
    type: str
    recipient_ids: tuple[int, ...]
    data: Mapping[str, Any] = field(default_factory=dict)
    priority: str = "normal"  # normal | critical

    def encode(self) -> bytes:
        return json.dumps(
            {
                "event_id": self.event_id,
                "type": self.type,
                "recipient_ids": [str(r) for r in self.recipient_ids],
                "data": dict(self.data),
                "priority": self.priority,
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def decode(cls, raw: bytes) -> NotifyRequest:
        obj = json.loads(raw)
        return cls(
            event_id=str(obj["event_id"]),
            type=str(obj["type"]),
            recipient_ids=tuple(int(r) for r in obj["recipient_ids"]),
            data=dict(obj.get("data") or {}),
            priority=str(obj.get("priority", "normal")),
        )

    def publish(self) -> Publish:
        """The log record, keyed by event id (DESIGN.md §4)."""
        return Publish(Topics.NOTIFY_REQUESTS, self.event_id, self.encode())


def recipients(ids: Sequence[int]) -> tuple[int, ...]:
    return tuple(dict.fromkeys(ids))
