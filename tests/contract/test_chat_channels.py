"""Contract of chat's ChannelStore on every backend: channels, membership, receipts."""

from __future__ import annotations

import asyncio
import random

import pytest

from fanout.accounts.model import UserId
from fanout.chat import frames
from fanout.chat.model import Channel, ChannelId, Event, Membership
from fanout.core.errors import Conflict, Invalid, NotFound
from tests.contract.conftest import CHAT_BASE_ID, ChatUnderTest

A, B, C, D, E = (UserId(CHAT_BASE_ID - n) for n in range(1, 6))


def dm_draft(chat: ChatUnderTest, creator: UserId) -> Channel:
    return Channel(ChannelId(chat.next_id()), "dm", "", creator, chat.now_ms(), 0, 0, 2)


async def unread(chat: ChatUnderTest, channel_id: int, user: UserId) -> int:
    channel = await chat.channels.get(channel_id)
    member = await chat.channels.membership(channel_id, user)
    assert member is not None
    return int(channel.msg_count - member.read_msg_no)


async def assert_log_matches_events(chat: ChatUnderTest, channel_id: int) -> list[Event]:
    """The channel's events are seqs 1..last_seq, and the log holds exactly their bytes."""
    events, more = await chat.messages.events(channel_id, 0, 100_000)
    channel = await chat.channels.get(channel_id)
    assert not more
    assert [e.seq for e in events] == list(range(1, channel.last_seq + 1))
    logged = await chat.logged(channel_id)
    assert logged == [frames.encode(frames.event_frame(e)) for e in events]
    return events  # type: ignore[no-any-return]  # the adapter is typed Any here


async def test_create_stores_the_channel_and_its_members_without_events(
    chat: ChatUnderTest,
) -> None:
    channel = await chat.group(A, B, C, B)
    assert (channel.kind, channel.created_by, channel.last_seq, channel.msg_count) == (
        "group", A, 0, 0,
    )  # fmt: skip
    assert channel.member_count == 3
    assert await chat.channels.get(channel.id) == channel
    assert await chat.channels.get(ChannelId(12345)) is None
    assert await chat.channels.members(channel.id) == sorted([A, B, C])
    assert await chat.channels.membership(channel.id, B) == Membership(channel.id, B, 0, 0, 0)
    assert await chat.channels.membership(channel.id, D) is None
    assert list(await chat.channels.channel_ids(C)) == [channel.id]
    assert list(await chat.channels.channel_ids(D)) == []
    assert await chat.logged(channel.id) == []


async def test_a_taken_channel_id_is_a_conflict(chat: ChatUnderTest) -> None:
    channel = await chat.group(A, B)
    clash = Channel(channel.id, "group", "other", C, chat.now_ms(), 0, 0, 1)
    with pytest.raises(Conflict):
        await chat.channels.create(clash, [C], dm_pair=None)
    assert await chat.channels.get(channel.id) == channel
    assert list(await chat.channels.channel_ids(C)) == []


async def test_a_pair_has_one_dm_whichever_side_creates_it(chat: ChatUnderTest) -> None:
    first, created = await chat.channels.create(dm_draft(chat, A), [A, B], dm_pair=(A, B))
    assert created and first.kind == "dm" and first.member_count == 2
    again = dm_draft(chat, B)
    for draft, pair in ((dm_draft(chat, A), (A, B)), (again, (B, A))):
        found, created = await chat.channels.create(draft, [pair[0], pair[1]], dm_pair=pair)
        assert (found, created) == (first, False)
    assert await chat.channels.get(again.id) is None  # nothing of the second attempt stored
    other, created = await chat.channels.create(dm_draft(chat, A), [A, C], dm_pair=(A, C))
    assert created and other.id != first.id
    assert sorted(await chat.channels.channel_ids(A)) == sorted([first.id, other.id])


async def test_concurrent_creates_of_one_dm_store_one_channel(chat: ChatUnderTest) -> None:
    drafts = [dm_draft(chat, A if n % 2 else B) for n in range(12)]
    results = await asyncio.gather(*(
        chat.channels.create(d, [A, B], dm_pair=(A, B) if n % 2 else (B, A))
        for n, d in enumerate(drafts)
    ))  # fmt: skip
    assert sum(created for _, created in results) == 1
    assert len({channel.id for channel, _ in results}) == 1
    assert list(await chat.channels.channel_ids(A)) == [results[0][0].id]
    assert await chat.channels.members(results[0][0].id) == sorted([A, B])


async def test_add_member_is_a_join_event_and_the_new_member_has_nothing_unread(
    chat: ChatUnderTest,
) -> None:
    channel = await chat.group(A, B)
    for n in range(3):
        await chat.send(channel.id, A, f"before {n}")
    at = chat.now_ms()
    event = await chat.channels.add_member(channel.id, C, at, 10)
    assert event is not None
    assert (event.channel_id, event.seq, event.kind, event.at_ms) == (channel.id, 4, "join", at)
    assert (event.user_id, event.message) == (C, None)
    assert await unread(chat, channel.id, C) == 0
    member = await chat.channels.membership(channel.id, C)
    assert (member.last_read_seq, member.last_delivered_seq) == (4, 4)
    assert await chat.channels.add_member(channel.id, C, chat.now_ms(), 10) is None
    after = await chat.channels.get(channel.id)
    assert (after.member_count, after.last_seq, after.msg_count) == (3, 4, 3)
    await chat.send(channel.id, A, "after")
    assert await unread(chat, channel.id, C) == 1
    with pytest.raises(NotFound):
        await chat.channels.add_member(ChannelId(999), C, chat.now_ms(), 10)
    events = await assert_log_matches_events(chat, channel.id)
    assert [e.kind for e in events] == ["message"] * 3 + ["join", "message"]


async def test_a_full_channel_refuses_members_and_stores_nothing(chat: ChatUnderTest) -> None:
    channel = await chat.group(A, B, C)
    with pytest.raises(Invalid):
        await chat.channels.add_member(channel.id, D, chat.now_ms(), 3)
    assert await chat.channels.get(channel.id) == channel
    assert await chat.channels.membership(channel.id, D) is None
    assert list(await chat.channels.channel_ids(D)) == []
    assert await chat.logged(channel.id) == []
    # Already a member: nothing to add, whatever the cap.
    assert await chat.channels.add_member(channel.id, B, chat.now_ms(), 3) is None


async def test_concurrent_adds_stop_exactly_at_the_cap(chat: ChatUnderTest) -> None:
    channel = await chat.group(A, B, C)
    newcomers = [UserId(CHAT_BASE_ID - 100 - n) for n in range(20)]
    results = await asyncio.gather(
        *(chat.channels.add_member(channel.id, u, chat.now_ms(), 8) for u in newcomers),
        return_exceptions=True,
    )
    joined = [r for r in results if isinstance(r, Event)]
    assert len(joined) == 5
    assert all(isinstance(r, Invalid) for r in results if not isinstance(r, Event))
    after = await chat.channels.get(channel.id)
    assert after.member_count == 8 == len(await chat.channels.members(channel.id))
    assert sorted(e.seq for e in joined) == [1, 2, 3, 4, 5]
    events = await assert_log_matches_events(chat, channel.id)
    assert {e.user_id for e in events} == {e.user_id for e in joined}


async def test_remove_member_is_a_leave_event_once(chat: ChatUnderTest) -> None:
    channel = await chat.group(A, B, C)
    at = chat.now_ms()
    event = await chat.channels.remove_member(channel.id, B, at)
    assert event is not None
    assert (event.seq, event.kind, event.user_id, event.at_ms) == (1, "leave", B, at)
    assert await chat.channels.remove_member(channel.id, B, chat.now_ms()) is None
    assert await chat.channels.remove_member(channel.id, D, chat.now_ms()) is None
    assert await chat.channels.remove_member(ChannelId(999), A, chat.now_ms()) is None
    assert await chat.channels.members(channel.id) == sorted([A, C])
    assert await chat.channels.membership(channel.id, B) is None
    after = await chat.channels.get(channel.id)
    assert (after.member_count, after.last_seq) == (2, 1)
    rejoined = await chat.channels.add_member(channel.id, B, chat.now_ms(), 10)
    assert rejoined is not None and rejoined.seq == 2
    events = await assert_log_matches_events(chat, channel.id)
    assert [(e.kind, e.user_id) for e in events] == [("leave", B), ("join", B)]


async def test_mark_read_moves_forward_only_clamped_to_the_last_seq(chat: ChatUnderTest) -> None:
    channel = await chat.group(A, B)
    assert await chat.channels.mark_read(channel.id, B, 5) is None  # nothing to read yet
    for n in range(4):
        await chat.send(channel.id, A, f"m{n}")
    assert await chat.channels.mark_read(channel.id, B, 2) == 2
    assert await chat.channels.mark_read(channel.id, B, 2) is None
    assert await chat.channels.mark_read(channel.id, B, 1) is None
    assert await chat.channels.mark_read(channel.id, B, 0) is None
    assert await chat.channels.mark_read(channel.id, B, 1_000) == 4
    assert (await chat.channels.membership(channel.id, B)).last_read_seq == 4
    assert await chat.channels.mark_read(channel.id, C, 3) is None  # not a member
    assert await chat.channels.mark_read(ChannelId(999), B, 3) is None
    assert await chat.channels.membership(channel.id, C) is None
    assert len(await chat.logged(channel.id)) == 4  # the sends; marks are not events


async def test_mark_delivered_is_independent_of_read(chat: ChatUnderTest) -> None:
    channel = await chat.group(A, B)
    for n in range(3):
        await chat.send(channel.id, A, f"m{n}")
    assert await chat.channels.mark_delivered(channel.id, B, 2) == 2
    assert await chat.channels.mark_delivered(channel.id, B, 1) is None
    assert await chat.channels.mark_delivered(channel.id, B, 99) == 3
    assert await chat.channels.mark_delivered(channel.id, B, 99) is None
    assert await chat.channels.mark_delivered(channel.id, C, 1) is None
    member = await chat.channels.membership(channel.id, B)
    assert (member.last_delivered_seq, member.last_read_seq, member.read_msg_no) == (3, 0, 0)


async def test_concurrent_marks_end_at_the_highest(chat: ChatUnderTest) -> None:
    channel = await chat.group(A, B)
    for n in range(30):
        await chat.send(channel.id, A, f"m{n}")
    seqs = list(range(1, 31))
    random.Random(7).shuffle(seqs)
    moved = await asyncio.gather(*(chat.channels.mark_read(channel.id, B, s) for s in seqs))
    assert 30 in moved
    assert all(m == s for m, s in zip(moved, seqs, strict=True) if m is not None)
    member = await chat.channels.membership(channel.id, B)
    assert (member.last_read_seq, member.read_msg_no) == (30, 30)
    assert await unread(chat, channel.id, B) == 0


async def test_unread_counts_messages_not_edits_and_keeps_deleted_ones(
    chat: ChatUnderTest,
) -> None:
    channel = await chat.group(A, B)
    sent = [await chat.send(channel.id, A, f"m{n}") for n in range(5)]
    assert await unread(chat, channel.id, B) == 5
    assert await unread(chat, channel.id, A) == 0  # sending reads up to one's own message
    await chat.messages.edit(sent[0].id, "edited", chat.now_ms())  # seq 6
    assert await unread(chat, channel.id, B) == 5
    assert await chat.channels.mark_read(channel.id, B, 3) == 3
    assert await unread(chat, channel.id, B) == 2
    await chat.messages.delete(sent[4].id, chat.now_ms())  # seq 7
    assert await unread(chat, channel.id, B) == 2  # a deleted message still counts
    assert await chat.channels.mark_read(channel.id, B, 6) == 6  # the edit event: 5 messages
    assert await unread(chat, channel.id, B) == 0
    assert await unread(chat, channel.id, A) == 0
    await chat.send(channel.id, B, "reply")  # seq 8: B's read position moves to it
    member = await chat.channels.membership(channel.id, B)
    assert (member.last_read_seq, member.read_msg_no) == (8, 6)
    assert await unread(chat, channel.id, A) == 1
    assert (await chat.channels.get(channel.id)).msg_count == 6


async def test_of_user_lists_newest_activity_first(chat: ChatUnderTest) -> None:
    first = await chat.group(A, B)
    second = await chat.group(A, C)
    third = await chat.group(B, C)
    await chat.send(first.id, A, "wake up")
    await chat.channels.mark_read(first.id, B, 1)
    listed = await chat.channels.of_user(A)
    assert [c.id for c, _ in listed] == [first.id, second.id]
    channel, member = listed[0]
    assert (channel.last_seq, channel.msg_count, member.user_id, member.last_read_seq) == (
        1, 1, A, 1,
    )  # fmt: skip
    assert [c.id for c, _ in await chat.channels.of_user(B)] == [first.id, third.id]
    assert await chat.channels.of_user(D) == []


async def test_small_peers_share_a_small_enough_channel(chat: ChatUnderTest) -> None:
    await chat.group(A, B)
    await chat.group(A, C, D)
    await chat.group(B, E, C, D, A)
    assert await chat.channels.small_peers(A, 2) == {B}
    assert await chat.channels.small_peers(A, 3) == {B, C, D}
    assert await chat.channels.small_peers(A, 5) == {B, C, D, E}
    assert await chat.channels.small_peers(E, 4) == set()
    assert await chat.channels.small_peers(UserId(7), 100) == set()
