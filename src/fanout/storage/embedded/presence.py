"""Chat presence in process memory (``fanout.chat.ports.PresenceStore``): embedded mode runs one
node, so nothing outlives the process that holds the connections anyway.

The rules every presence adapter keeps (``tests/contract/test_chat_presence.py``):

* A user is online while any node's lease on them lives (expiry after now, by ``clock``).
* :meth:`touch` answers True when the user had no live lease before it: the offline → online
  transition, to be announced.
* A user stays *listed* from their first touch until one caller reports them offline: either
  :meth:`leave` dropping the last live lease, or :meth:`sweep` finding every lease expired. The
  one that unlists the user returns it; every other gets False / leaves the user out. So each
  offline transition is reported exactly once, never by both.
"""

from __future__ import annotations

from collections.abc import Sequence

from fanout.accounts.model import UserId
from fanout.core.clock import Clock

__all__ = ["MemoryPresenceStore"]


class MemoryPresenceStore:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        # Listed users → node → lease expiry (ms). Expired leases linger until the next change.
        self._leases: dict[UserId, dict[str, int]] = {}
        # Listed users → their latest lease expiry: ``online`` is one lookup per user (the
        # offline-notice consumer asks about every member of every message's channel).
        self._until: dict[UserId, int] = {}

    async def touch(self, user: UserId, node: str, ttl_ms: int) -> bool:
        now = self._clock.now_ms()
        leases = self._leases.setdefault(user, {})
        was_online = _prune(leases, now)
        leases[node] = now + ttl_ms
        self._until[user] = max(leases.values())
        return not was_online

    async def leave(self, user: UserId, node: str) -> bool:
        leases = self._leases.get(user)
        if leases is None:
            return False  # not listed: already reported offline (or never online)
        leases.pop(node, None)
        if _prune(leases, self._clock.now_ms()):
            self._until[user] = max(leases.values())
            return False
        del self._leases[user]
        del self._until[user]
        return True

    async def online(self, users: Sequence[UserId]) -> set[UserId]:
        now = self._clock.now_ms()
        until = self._until
        return {u for u in users if until.get(u, 0) > now}

    async def sweep(self) -> list[UserId]:
        now = self._clock.now_ms()
        gone = [u for u, leases in self._leases.items() if not _prune(leases, now)]
        for user in gone:
            del self._leases[user]
            del self._until[user]
        return gone


def _prune(leases: dict[str, int], now: int) -> bool:
    """Drop expired leases; whether any lives."""
    for node in [n for n, expiry in leases.items() if expiry <= now]:
        del leases[node]
    return bool(leases)
