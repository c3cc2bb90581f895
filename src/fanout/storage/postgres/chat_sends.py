"""Chat sends on PostgreSQL, joined: the sends that arrive while one is in flight go together.

A send is one server-side call (``chat_send``, migration ``0006_chat_send.sql``); each still
costs PostgreSQL a statement and a transaction, and the gateway a round trip, which is most of
its price (measured: PostgreSQL spent ~200 µs of CPU per send made alone, ~50 µs per send in
transactions of eight). So sends go through :class:`~fanout.core.passes.Passes`: a lone send
is made at once, and the sends that arrive while it is in flight are made together by
``chat_send_many`` in one transaction — batches grow with the load and shrink when it passes.

A batch is all or nothing. If it fails (a taken message id in one send, a deadlock, anything but
an outage), each of its sends is made again alone, so one bad send fails only itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from fanout.chat.model import NewMessage
from fanout.core.errors import Conflict
from fanout.core.log import Topics
from fanout.core.passes import Passes, together_or_alone
from fanout.storage.postgres.engine import PostgresEngine

__all__ = ["Send", "Sends"]

SENDS_PER_PASS = 64  # sends joined in one transaction at most: its locks stay short
# One call, lone or joined, in flight per process: the sends that arrive meanwhile wait for it
# and go together in the next. With two in flight, a send arriving during one call started
# another at once, so batches stayed small and a third of the calls were lone sends, each
# paying the per-call price above (measured: docs/benchmarks.md, chat, session 20). The cost: a
# slow call (a failed batch remade send by send, a wait on a channel's lock) holds up the
# process's other sends until it ends.
PASSES_AT_ONCE = 1

_SEND = "SELECT outcome, new_seq FROM chat_send($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
_SEND_MANY = (
    "SELECT n, outcome, new_seq"
    " FROM chat_send_many($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
)


@dataclass(slots=True)
class Send:
    """One send: the message, its words as indexed, its event's JSON cut where the seq goes
    (:func:`fanout.chat.frames.seq_slots`), and once made, its outcome (``sent``, ``repeat``,
    ``not_member``, ``no_channel``) and the seq it took, or the error it failed with."""

    message: NewMessage
    words: str
    slots: list[bytes]
    outcome: str = ""
    seq: int = 0
    error: Exception | None = None  # what making it alone raised (a taken id: Conflict)


class Sends:
    def __init__(self, engine: PostgresEngine) -> None:
        self._engine = engine
        self._passes: Passes[Send] = Passes(self._many, most=SENDS_PER_PASS,
                                            at_once=PASSES_AT_ONCE)  # fmt: skip

    async def make(self, send: Send) -> None:
        """Make ``send``, filling in its outcome. ``Conflict`` if its message id is taken,
        ``Unavailable`` when PostgreSQL cannot be reached (the send may or may not be made)."""
        await self._passes.submit([send])
        if send.error is not None:
            raise send.error

    async def _alone(self, send: Send) -> None:
        m = send.message
        try:
            row = await self._engine.fetchrow(
                _SEND, m.id, m.channel_id, m.sender_id, m.client_msg_id, m.text,
                list(m.attachments), m.created_ms, send.words, send.slots, Topics.CHAT_EVENTS,
            )  # fmt: skip
        except asyncpg.UniqueViolationError as exc:
            raise Conflict(f"message id {m.id} is taken") from exc
        assert row is not None
        send.outcome, send.seq = row["outcome"], row["new_seq"] or 0

    async def _many(self, sends: Sequence[Send]) -> None:
        await together_or_alone(sends, self._together, self._alone)

    async def _together(self, sends: Sequence[Send]) -> None:
        attachments: list[int] = []
        starts: list[int] = []
        for send in sends:
            starts.append(len(attachments) + 1)
            attachments += send.message.attachments
        parts_each = len(sends[0].slots)
        assert all(len(send.slots) == parts_each for send in sends)  # a message's: always 3
        ms = [send.message for send in sends]
        rows = await self._engine.fetch(
            _SEND_MANY,
            [m.id for m in ms],
            [m.channel_id for m in ms],
            [m.sender_id for m in ms],
            [m.client_msg_id for m in ms],
            [m.text for m in ms],
            attachments,
            starts,
            [len(m.attachments) for m in ms],
            [m.created_ms for m in ms],
            [send.words for send in sends],
            [part for send in sends for part in send.slots],
            parts_each,
            Topics.CHAT_EVENTS,
        )
        for row in rows:
            send = sends[row["n"] - 1]
            send.outcome, send.seq = row["outcome"], row["new_seq"] or 0
