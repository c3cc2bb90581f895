"""Each channel's events in seq order, without gaps, for one gateway's connections.

Per channel followed here, :class:`ChannelOrder` keeps the next seq to deliver. An event that
overtook another (two senders on two processes) is held until the missing one arrives or, after
``GAP_WAIT_S``, is read from the store; a repair delivers in order up to the first seq still
missing, and the rest waits for another repair (an event that arrived while the store was read
may lie past a gap that read did not cover). If the store cannot be read, what arrived is
delivered anyway rather than held forever.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from fanout.chat import frames
from fanout.chat.connection import Outgoing
from fanout.chat.model import ChannelId, Event

__all__ = ["GAP_WAIT_S", "ChannelOrder", "about"]

log = logging.getLogger(__name__)

GAP_WAIT_S = 0.2  # how long an out-of-order event waits for the one it overtook

Held = tuple[str, int, Outgoing]  # an event's kind, whom it is about, its frame
Deliver = Callable[[ChannelId, int, str, int, Outgoing], None]
ReadEvents = Callable[[ChannelId, int, int], Awaitable[tuple[list[Event], bool]]]


def about(event: Event) -> int:
    """Whom an event is about: the joining or leaving user, a message's sender."""
    return event.user_id or (event.message.sender_id if event.message else 0)


class ChannelOrder:
    """``deliver(channel, seq, kind, about, frame)`` is called once per seq, in order; it may
    :meth:`forget` the channel (a leave ending this process's interest). ``read`` is the store's
    ``events(channel, after_seq, limit)``; ``spawn`` runs a background coroutine."""

    def __init__(
        self,
        deliver: Deliver,
        read: ReadEvents,
        spawn: Callable[[Coroutine[Any, Any, None]], None],
        replay_cap: int,
    ) -> None:
        self._deliver_to = deliver
        self._read = read
        self._spawn = spawn
        self._replay_cap = replay_cap
        self.next: dict[ChannelId, int] = {}
        self.held: dict[ChannelId, dict[int, Held]] = {}

    def start(self, channel_id: ChannelId, next_seq: int) -> None:
        """Follow a channel from ``next_seq``: below it was committed before (clients resume it),
        between it and a later arrival is a gap to fill."""
        self.next[channel_id] = next_seq
        self.held.pop(channel_id, None)

    def forget(self, channel_id: ChannelId) -> None:
        self.next.pop(channel_id, None)
        self.held.pop(channel_id, None)

    def arrived(self, channel_id: ChannelId, seq: int, kind: str, who: int, text: Outgoing) -> None:
        """An event of a channel followed here (or a join of a local user): delivered now and
        followed by what it unblocks, held if it overtook another, dropped if seen before."""
        expected = self.next.get(channel_id)
        if expected is None or seq == expected:
            self._deliver(channel_id, seq, kind, who, text)
            held = self.held.get(channel_id)
            # A delivered leave may end this process's interest (and its order state) on the way.
            while held and self.next.get(channel_id) in held:
                nxt = self.next[channel_id]
                self._deliver(channel_id, nxt, *held.pop(nxt))
            if held is not None and not held:
                self.held.pop(channel_id, None)
        elif seq > expected:
            held = self.held.setdefault(channel_id, {})
            if not held:
                self._spawn(self._repair(channel_id))
            held[seq] = (kind, who, text)

    async def catch_up(self, channel_id: ChannelId) -> None:
        """Deliver, in order, what the store holds past what this process delivered."""
        if (expected := self.next.get(channel_id)) is not None:
            found, _ = await self._read(channel_id, expected - 1, self._replay_cap)
            for e in found:
                self.arrived(channel_id, e.seq, e.kind, about(e), _frame(e))

    def _deliver(
        self, channel_id: ChannelId, seq: int, kind: str, who: int, text: Outgoing
    ) -> None:
        self.next[channel_id] = seq + 1
        self._deliver_to(channel_id, seq, kind, who, text)

    async def _repair(self, channel_id: ChannelId) -> None:
        """Fill a gap from the store once the missing events had ``GAP_WAIT_S`` to arrive."""
        await asyncio.sleep(GAP_WAIT_S)
        held = self.held.get(channel_id)
        expected = self.next.get(channel_id)
        if not held or expected is None:
            return
        try:
            found, _ = await self._read(
                channel_id, expected - 1, min(max(held) - expected + 1, self._replay_cap)
            )
        except Exception:  # the store is down: deliver what arrived rather than hold forever
            log.exception("could not fill a gap in channel %s", channel_id)
            self._release(channel_id, held, across_gaps=True)
            return
        if self.held.get(channel_id) is not held:  # its last member left meanwhile
            return
        for event in found:
            if event.seq >= self.next.get(channel_id, 0) and event.seq not in held:
                held[event.seq] = (event.kind, event.user_id or 0, _frame(event))
        self._release(channel_id, held, across_gaps=False)

    def _release(self, channel_id: ChannelId, held: dict[int, Held], *, across_gaps: bool) -> None:
        """Deliver a repaired channel's held events in order: up to the first seq still missing,
        or ``across_gaps``, all of them."""
        if self.held.get(channel_id) is not held:  # its last member left meanwhile
            return
        for seq in sorted(held):
            expected = self.next.get(channel_id)
            if expected is None or (seq > expected and not across_gaps):
                break
            entry = held.pop(seq)
            if seq >= expected:
                self._deliver(channel_id, seq, *entry)
        if held and self.held.get(channel_id) is held:
            self._spawn(self._repair(channel_id))
        elif self.held.get(channel_id) is held:
            del self.held[channel_id]


def _frame(event: Event) -> Outgoing:
    return Outgoing(frames.event_bytes(event).decode())
