"""State for ``fanout bench chat``: the users, their channels and tokens, and where each
client runs (``place``: which client process, which server).

The population is planned from ``--clients`` alone (and the seed): users are shuffled, then half
of them go into DMs (pairs), about 40 % into groups of 10 and the rest into groups of 500 — at
least one 500-member group from 500 clients on; below that one group of a tenth of the clients
stands in for it. Every user is in exactly one channel, so a user's connection sees only its
channel's traffic.

Everything is written through an in-process platform (``bootstrap.build``) on the backend's
data dir or DSNs, with a fast password hash and a fixed secret key: registering 10 000 users
through ``POST /v1/users`` would spend minutes in argon2, and the tokens minted here verify in
the ``fanout serve`` processes started later with the same ``FANOUT_SECRET_KEY``.
"""

from __future__ import annotations

import asyncio
import random
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn

from fanout.accounts.model import NewUser, User, UserId
from fanout.accounts.passwords import PasswordHasher
from fanout.bootstrap import build
from fanout.chat.model import Channel, ChannelKind
from fanout.core.config import Settings

__all__ = [
    "BIG_GROUP",
    "Planned",
    "Population",
    "Room",
    "Spec",
    "SpecRoom",
    "place",
    "plan",
    "populate",
    "secret_key",
]

DM_OF_REST = 5 / 9  # DMs : groups of 10 = 50 % : 40 % of all users at 10 000 clients
SMALL_GROUP = 10
BIG_GROUP = 500
BIG_SHARE = 0.1  # of the users, in groups of BIG_GROUP (rounded to whole groups, at least one)
WRITE_CONCURRENCY = 16  # users/channels created at once (PostgreSQL overlaps them; SQLite queues)
PASSWORD = "bench-chat-password"
BLAST_SENDERS = 4  # per client process: members of the 500-member group that blast it

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Planned:
    label: str  # "dm", "group10", "group500" (the sizes this label stands for at 10 000 clients)
    members: tuple[int, ...]  # client indices


@dataclass(frozen=True, slots=True)
class Room:
    """A created channel: its id as the wire spells it, its label and members (client indices)."""

    id: str
    label: str
    members: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Population:
    user_ids: list[str]  # per client index, as the wire spells ids
    tokens: list[str]  # per client index
    rooms: list[Room]

    def labels(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for room in self.rooms:
            counts[room.label] = counts.get(room.label, 0) + 1
        return counts


@dataclass(frozen=True, slots=True)
class SpecRoom:
    id: str
    size: int  # members in the channel (all processes)
    local: tuple[int, ...]  # positions of this process's members in Spec.clients


@dataclass(frozen=True, slots=True)
class Spec:
    """One client process: its clients (user id, ``ws://`` URI) and the channels it sends in."""

    index: int
    clients: list[tuple[str, str]]
    rooms: list[SpecRoom]  # those with a local member
    rooms_total: int  # channels of the whole run: this process sends its share of the rate
    blast_room: str | None
    blast_senders: tuple[int, ...]  # positions of local members of the blast room
    seed: int


def place(pop: Population, urls: list[str], procs: int, seed: int) -> list[Spec]:
    """Client ``i`` in client process ``i % procs``, on server ``(i // procs) % len(urls)``:
    the channels were drawn from shuffled users, so a channel's members sit in both processes
    and, scaled, on both servers."""
    base = [u.replace("http://", "ws://") + "/v1/ws?token=" for u in urls]
    big = next((r for r in pop.rooms if r.label == "group500"), None)
    specs = []
    for p in range(procs):
        mine = range(p, len(pop.tokens), procs)
        clients = [(pop.user_ids[i], base[(i // procs) % len(base)] + pop.tokens[i]) for i in mine]
        rooms = []
        for room in pop.rooms:
            local = tuple(m // procs for m in room.members if m % procs == p)
            if local:
                rooms.append(SpecRoom(room.id, len(room.members), local))
        senders = tuple(m // procs for m in big.members if m % procs == p) if big else ()
        specs.append(Spec(p, clients, rooms, len(pop.rooms), big.id if big else None,
                          senders[:BLAST_SENDERS], seed + p))  # fmt: skip
    return specs


def secret_key() -> str:
    """A token-signing key shared by the setup platform and every ``fanout serve`` of a run."""
    return secrets.token_urlsafe(48)


def plan(clients: int, seed: int) -> list[Planned]:
    """Shuffle the clients into DMs (50 %), groups of 10 (about 40 %) and groups of 500 (the
    rest, at least one group from 500 clients on); leftovers join the last small group."""
    if clients < 2:
        raise ValueError("the chat benchmark needs at least 2 clients")
    order = list(range(clients))
    random.Random(seed).shuffle(order)
    if clients >= BIG_GROUP:
        big_groups = max(1, round(clients * BIG_SHARE / BIG_GROUP))
        big_size = BIG_GROUP
    else:
        big_groups, big_size = 1, max(clients // 10, 2)  # scaled down: a tenth of the clients
    planned: list[Planned] = []
    at = 0
    for _ in range(big_groups):
        planned.append(Planned("group500", tuple(order[at : at + big_size])))
        at += big_size
    rest = clients - at
    dm_users = int(rest * DM_OF_REST) // 2 * 2
    for _ in range(dm_users // 2):
        planned.append(Planned("dm", (order[at], order[at + 1])))
        at += 2
    while at < clients:
        size = SMALL_GROUP if clients - at > SMALL_GROUP + 2 else clients - at  # no tiny tail
        planned.append(Planned("group10", tuple(order[at : at + size])))
        at += size
    return planned


async def _bounded(
    jobs: Sequence[Callable[[], Awaitable[T]]], step: Callable[[int], None]
) -> list[T]:
    """Run the coroutine factories ``jobs`` ``WRITE_CONCURRENCY`` at a time, results in order."""
    gate = asyncio.Semaphore(WRITE_CONCURRENCY)

    async def one(job: Callable[[], Awaitable[T]]) -> T:
        async with gate:
            result = await job()
            step(1)
            return result

    return list(await asyncio.gather(*(one(j) for j in jobs)))


async def populate(settings: Settings, clients: int, seed: int, label: str) -> Population:
    """Create ``clients`` users, their channels (``plan``) and a token each, through an
    in-process platform on ``settings``, with progress bars."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns) as progress:
        bars: dict[str, TaskID] = {}

        def step(what: str, done: int, total: int) -> None:
            if what not in bars:
                bars[what] = progress.add_task(f"{label}: {what}", total=total)
            progress.update(bars[what], completed=done)

        return await _populate(settings, clients, seed, step)


async def _populate(
    settings: Settings, clients: int, seed: int, step: Callable[[str, int, int], None]
) -> Population:
    platform = await build(settings, hasher=PasswordHasher.fast_for_tests(), consume=False)
    try:
        password_hash = await PasswordHasher.fast_for_tests().hash(PASSWORD)
        now_ms = platform.clock.now_ms()
        ids = [UserId(platform.ids.next_id()) for _ in range(clients)]
        done = {"users": 0, "channels": 0}

        def counter(what: str, total: int) -> Callable[[int], None]:
            def advance(n: int) -> None:
                done[what] += n
                step(what, done[what], total)

            return advance

        def user(i: int) -> Callable[[], Awaitable[User]]:
            name = f"bench_chat_{i}"
            return lambda: platform.users.create(NewUser(ids[i], name, name, password_hash, now_ms))

        await _bounded([user(i) for i in range(clients)], counter("users", clients))
        planned = plan(clients, seed)

        def channel(p: Planned) -> Callable[[], Awaitable[tuple[Channel, bool]]]:
            kind: ChannelKind = "dm" if p.label == "dm" else "group"
            first, *others = (ids[m] for m in p.members)
            return lambda: platform.chat.create_channel(first, kind, p.label, others)

        created = await _bounded([channel(p) for p in planned], counter("channels", len(planned)))
        rooms = [
            Room(str(made.id), p.label, p.members)
            for p, (made, _) in zip(planned, created, strict=True)
        ]
        tokens = [platform.tokens.issue(u).token for u in ids]
        return Population([str(u) for u in ids], tokens, rooms)
    finally:
        await platform.close()
