"""Contract of chat's MessageStore and UploadStore on every backend."""

from __future__ import annotations

import asyncio
import random
import re
import unicodedata
from dataclasses import replace

import pytest

from fanout.accounts.model import UserId
from fanout.chat import frames
from fanout.chat.model import ChannelId, Event, Message, MessageId, Upload, UploadId
from fanout.chat.search import terms
from fanout.core.errors import Conflict, Forbidden, Gone, NotFound
from tests.contract.conftest import CHAT_BASE_ID, ChatUnderTest

A, B, C, D = (UserId(CHAT_BASE_ID - n) for n in range(1, 5))


async def all_events(chat: ChatUnderTest, channel_id: int, page: int = 1000) -> list[Event]:
    """Every event of the channel, paged by ``page``; checks has_more on the way."""
    found: list[Event] = []
    last_seq = (await chat.channels.get(channel_id)).last_seq
    while True:
        events, more = await chat.messages.events(channel_id, found[-1].seq if found else 0, page)
        found += events
        assert more == (len(found) < last_seq)
        if not more:
            return found


def body(event: Event) -> bytes:
    return frames.encode(frames.event_frame(event))


async def test_send_stores_the_message_and_its_event(chat: ChatUnderTest) -> None:
    channel = await chat.group(A, B)
    draft = chat.draft(channel.id, A, "hello ✓", cmid="x-1")
    message, event = await chat.messages.send(draft)
    assert message == Message(draft.id, channel.id, 1, A, "x-1", "hello ✓", (), draft.created_ms)
    assert event == Event(channel.id, 1, "message", draft.created_ms, message)
    assert await chat.messages.get(draft.id) == message
    assert await chat.messages.get(MessageId(42)) is None
    assert await chat.messages.events(channel.id, 0, 10) == ([event], False)
    assert await chat.logged(channel.id) == [body(event)]
    sender = await chat.channels.membership(channel.id, A)
    assert (sender.last_read_seq, sender.read_msg_no) == (1, 1)
    assert (await chat.channels.membership(channel.id, B)).last_read_seq == 0
    after = await chat.channels.get(channel.id)
    assert (after.last_seq, after.msg_count) == (1, 1)


async def test_a_retried_send_returns_the_stored_message_and_stores_nothing(
    chat: ChatUnderTest,
) -> None:
    channel = await chat.group(A, B)
    first, event = await chat.messages.send(chat.draft(channel.id, A, "once", cmid="k"))
    assert event is not None
    again, none = await chat.messages.send(chat.draft(channel.id, A, "changed text", cmid="k"))
    assert (again, none) == (first, None)
    # The key is (channel, sender, client_msg_id): other senders and channels are new messages.
    other = await chat.send(channel.id, B, "mine", cmid="k")
    elsewhere = await chat.group(A, B)
    moved = await chat.send(elsewhere.id, A, "there", cmid="k")
    assert (other.seq, moved.seq) == (2, 1)
    assert [e.seq for e in await all_events(chat, channel.id)] == [1, 2]
    assert len(await chat.logged(channel.id)) == 2
    # A deleted message is still the one stored under its key.
    await chat.messages.delete(first.id, chat.now_ms())
    stored, none = await chat.messages.send(chat.draft(channel.id, A, "once", cmid="k"))
    assert none is None and stored.id == first.id and stored.deleted


async def test_concurrent_identical_sends_store_one_message_and_one_event(
    chat: ChatUnderTest,
) -> None:
    channel = await chat.group(A, B)
    drafts = [chat.draft(channel.id, A, "twice?", cmid="same") for _ in range(20)]
    results = await asyncio.gather(*(chat.messages.send(d) for d in drafts))
    events = [e for _, e in results if e is not None]
    assert len(events) == 1
    assert len({m for m, _ in results}) == 1
    assert results[0][0] == events[0].message
    channel = await chat.channels.get(channel.id)
    assert (channel.last_seq, channel.msg_count) == (1, 1)
    assert await chat.logged(channel.id) == [body(events[0])]


async def test_send_to_an_unknown_channel_stores_nothing(chat: ChatUnderTest) -> None:
    draft = chat.draft(999, A, "lost")
    with pytest.raises(NotFound):
        await chat.messages.send(draft)
    assert await chat.messages.get(draft.id) is None
    assert await chat.logged(999) == []


async def test_a_taken_message_id_is_a_conflict(chat: ChatUnderTest) -> None:
    channel = await chat.group(A, B)
    sent = await chat.send(channel.id, A, "first")
    clash = replace(chat.draft(channel.id, B, "second"), id=sent.id)
    with pytest.raises(Conflict):
        await chat.messages.send(clash)
    assert await chat.messages.get(sent.id) == sent
    assert (await chat.channels.get(channel.id)).last_seq == 1
    assert len(await chat.logged(channel.id)) == 1


async def test_concurrent_writers_get_gap_free_increasing_seqs(chat: ChatUnderTest) -> None:
    channel = await chat.group(A, B, C)
    early = [await chat.send(channel.id, A, f"early {n}") for n in range(20)]
    senders = [A, B, C]
    writes = [chat.messages.send(chat.draft(channel.id, senders[n % 3], f"msg {n}"))
              for n in range(200)]  # fmt: skip
    writes += [chat.messages.edit(m.id, f"edit {n}", chat.now_ms()) for n, m in enumerate(early)]
    writes += [chat.messages.delete(m.id, chat.now_ms()) for m in early[::4]]
    random.Random(3).shuffle(writes)
    results = await asyncio.gather(*writes, return_exceptions=True)
    # Only an edit that came after its message's delete may fail, and then with Gone.
    failed = [r for r in results if isinstance(r, BaseException)]
    assert all(isinstance(r, Gone) for r in failed) and len(failed) <= 5

    total = 20 + 200 + (20 - len(failed)) + 5
    after = await chat.channels.get(channel.id)
    assert (after.last_seq, after.msg_count) == (total, 220)
    events = await all_events(chat, channel.id, page=37)
    assert [e.seq for e in events] == list(range(1, total + 1))
    assert await chat.logged(channel.id) == [body(e) for e in events]
    kinds = [e.kind for e in events]
    assert (kinds.count("message"), kinds.count("edit"), kinds.count("delete")) == (
        220, 20 - len(failed), 5,
    )  # fmt: skip
    history, more = await chat.messages.history(channel.id, None, 1000)
    assert not more and len(history) == 220
    created = {e.message.id: e.seq for e in events if e.kind == "message" and e.message}
    assert {m.id: m.seq for m in history} == created
    assert [m.seq for m in history] == sorted(created.values())
    for m in early:  # its message event, then edits, then at most one delete, last
        of_m = [e.kind for e in events if e.message is not None and e.message.id == m.id]
        assert of_m[0] == "message" and set(of_m[1:]) <= {"edit", "delete"}
        assert "delete" not in of_m[:-1]


async def test_edit_and_delete_keep_the_replay_as_it_happened(chat: ChatUnderTest) -> None:
    channel = await chat.group(A, B)
    sent = await chat.send(channel.id, A, "first draft")
    at = chat.now_ms()
    edited, event = await chat.messages.edit(sent.id, "final text", at)
    assert edited == replace(sent, text="final text", edited_ms=at)
    assert event == Event(channel.id, 2, "edit", at, edited)
    assert await chat.messages.get(sent.id) == edited
    gone_at = chat.now_ms()
    deleted = await chat.messages.delete(sent.id, gone_at)
    assert deleted == Event(channel.id, 3, "delete", gone_at,
                            replace(edited, text="", deleted=True))  # fmt: skip
    assert await chat.messages.delete(sent.id, chat.now_ms()) is None
    with pytest.raises(Gone):
        await chat.messages.edit(sent.id, "too late", chat.now_ms())
    with pytest.raises(NotFound):
        await chat.messages.edit(MessageId(42), "who?", chat.now_ms())
    with pytest.raises(NotFound):
        await chat.messages.delete(MessageId(42), chat.now_ms())
    replay = await all_events(chat, channel.id)
    assert [(e.kind, e.message.text if e.message else None) for e in replay] == [
        ("message", "first draft"), ("edit", "final text"), ("delete", ""),
    ]  # fmt: skip
    assert await chat.logged(channel.id) == [body(e) for e in replay]
    assert await chat.messages.history(channel.id, None, 10) == (
        [replace(sent, text="", edited_ms=at, deleted=True)], False,
    )  # fmt: skip


async def test_history_pages_backwards_in_ascending_order(chat: ChatUnderTest) -> None:
    channel = await chat.group(A, B)
    sent = []
    for n in range(7):
        sent.append(await chat.send(channel.id, A, f"m{n}"))
        if n == 3:
            await chat.channels.add_member(channel.id, C, chat.now_ms(), 10)  # seq 5, no message
    assert [m.seq for m in sent] == [1, 2, 3, 4, 6, 7, 8]
    await chat.messages.delete(sent[1].id, chat.now_ms())
    page, more = await chat.messages.history(channel.id, None, 3)
    assert ([m.text for m in page], more) == (["m4", "m5", "m6"], True)
    page, more = await chat.messages.history(channel.id, page[0].seq, 3)
    assert ([m.text for m in page], more) == (["", "m2", "m3"], True)
    assert page[0].deleted and page[0].id == sent[1].id
    page, more = await chat.messages.history(channel.id, page[0].seq, 3)
    assert ([m.text for m in page], more) == (["m0"], False)
    assert await chat.messages.history(channel.id, 1, 3) == ([], False)
    assert await chat.messages.history(channel.id, None, 7) == (
        [replace(m, text="", deleted=True) if m.id == sent[1].id else m for m in sent], False,
    )  # fmt: skip
    assert await chat.messages.history(ChannelId(999), None, 3) == ([], False)


async def test_events_page_forwards_from_a_seq(chat: ChatUnderTest) -> None:
    channel = await chat.group(A, B)
    for n in range(5):
        await chat.send(channel.id, B, f"m{n}")
    page, more = await chat.messages.events(channel.id, 1, 2)
    assert ([e.seq for e in page], more) == ([2, 3], True)
    page, more = await chat.messages.events(channel.id, 3, 2)
    assert ([e.seq for e in page], more) == ([4, 5], False)
    assert await chat.messages.events(channel.id, 5, 2) == ([], False)
    assert await chat.messages.events(ChannelId(999), 0, 2) == ([], False)


# -- search ------------------------------------------------------------------------------------

CORPUS = [
    "The quick brown fox",
    "a QUICK red fox jumps",
    "lazy dog sleeps",
    "or and not near",
    "drop table chat_messages",
    "Café au lait, s'il vous plaît",
    "email me: someone@example.com (urgent!)",
    "50% off * everything",
    "naïve résumé",
    "日本語 テキスト",
]

NASTY = [
    '"', "*", "OR", "or", ":", "'", "\\", "&|!()", "a:*", 'fox" OR "dog', "NEAR(quick fox)",
    "-fox", "^quick", "text:fox", "{quick fox}", "'; DROP TABLE chat_messages; --", "%", "_",
    "fox & !dog", "quick | lazy", "quick <-> fox", "!!", "fox:*", "quick\x00fox", "\\x00",
    "quick\tfox\n", "🦊 fox", "QUICK", "résumé", "resume", "cafe", "example.com", "chat_messages",
    "50%", "*everything*", "not", "near", "and", "テキスト", "日本語", "((fox))", "fox)", "(fox",
    "$1", "?", "::tsquery", "plainto_tsquery('simple', 'x')", " ", "", "fox " * 30,
]  # fmt: skip

_WORD = re.compile(r"[^\W_]+")


def words(text: str) -> set[str]:
    """The model: letters and digits, lower-cased, without diacritics."""
    folded = "".join(c for c in unicodedata.normalize("NFKD", text.lower())
                     if not unicodedata.combining(c))  # fmt: skip
    return set(_WORD.findall(folded))


def expected(corpus: dict[MessageId, str], query: str) -> set[MessageId]:
    wanted = set().union(*(words(t) for t in terms(query)))
    return {i for i, text in corpus.items() if wanted and wanted <= words(text)}


async def test_search_finds_messages_with_every_word_in_the_users_channels(
    chat: ChatUnderTest,
) -> None:
    ours = await chat.group(A, B)
    theirs = await chat.group(C, D)
    mine = [await chat.send(ours.id, A, text) for text in CORPUS]
    elsewhere = await chat.send(theirs.id, C, "quick fox elsewhere")
    found = await chat.messages.search(B, "fox QUICK", None, 10)
    assert [m.id for m in found] == [mine[1].id, mine[0].id]  # newest first
    assert await chat.messages.search(B, "fox quick", None, 1) == [mine[1]]
    assert await chat.messages.search(C, "quick fox", None, 10) == [elsewhere]
    assert await chat.messages.search(D, "quick fox", ours.id, 10) == []  # channel filter
    assert await chat.messages.search(B, "quick fox", theirs.id, 10) == []
    assert await chat.messages.search(A, "quick cat", None, 10) == []
    assert await chat.messages.search(A, "fox", ours.id, 10) == [mine[1], mine[0]]


async def test_search_takes_punctuation_and_operators_as_plain_words(
    chat: ChatUnderTest,
) -> None:
    channel = await chat.group(A, B)
    corpus = {(await chat.send(channel.id, A, text)).id: text for text in CORPUS}
    rng = random.Random(11)
    pieces = [*NASTY, "quick", "fox", "lait", "café", "someone", "example"]
    fuzz = [" ".join(rng.choice(pieces) for _ in range(rng.randint(1, 4))) for _ in range(150)]
    for query in NASTY + fuzz:
        found = await chat.messages.search(A, query, None, 50)
        assert {m.id for m in found} == expected(corpus, query), query


async def test_search_follows_edits_and_forgets_deleted_messages(chat: ChatUnderTest) -> None:
    channel = await chat.group(A, B)
    sent = await chat.send(channel.id, A, "original wording")
    kept = await chat.send(channel.id, A, "revised original")
    await chat.messages.edit(sent.id, "revised wording", chat.now_ms())
    assert await chat.messages.search(A, "original wording", None, 10) == []
    found = await chat.messages.search(B, "revised", None, 10)
    assert [m.id for m in found] == [kept.id, sent.id]
    assert found[1].text == "revised wording"
    await chat.messages.delete(kept.id, chat.now_ms())
    assert [m.id for m in await chat.messages.search(B, "revised", None, 10)] == [sent.id]
    assert await chat.messages.search(B, "original", None, 10) == []
    await chat.channels.remove_member(channel.id, B, chat.now_ms())
    assert await chat.messages.search(B, "revised", None, 10) == []


async def test_search_sees_every_message_whichever_batch_indexed_it(chat: ChatUnderTest) -> None:
    channel = await chat.group(A, B)
    sent = [await chat.send(channel.id, A, f"word{n % 3} common") for n in range(150)]
    await chat.messages.delete(sent[-1].id, chat.now_ms())  # the newest may not be indexed yet
    await chat.messages.edit(sent[-2].id, "changed", chat.now_ms())
    found = await chat.messages.search(B, "common", None, 200)
    assert [m.id for m in found] == [m.id for m in reversed(sent[:-2])]
    assert [m.id for m in await chat.messages.search(B, "changed", None, 5)] == [sent[-2].id]
    assert len(await chat.messages.search(B, "word1 common", None, 200)) == 50 - 1  # 148 went


# -- attachments and uploads -------------------------------------------------------------------


async def test_attachments_are_visible_to_members_of_a_channel_holding_them(
    chat: ChatUnderTest,
) -> None:
    upload = Upload(UploadId(chat.next_id()), A, 1234, "image/png", "cat ✓.png", chat.now_ms())
    await chat.uploads.create(upload)
    assert await chat.uploads.get(upload.id) == upload
    assert await chat.uploads.get(UploadId(42)) is None
    with pytest.raises(Conflict):
        await chat.uploads.create(replace(upload, filename="again.png"))
    private = await chat.group(A, B)
    other = await chat.group(A, C)
    assert not await chat.messages.attachment_visible(upload.id, B)
    sent = await chat.send(private.id, A, "look", attachments=(upload.id, upload.id))
    assert sent.attachments == (upload.id, upload.id)
    assert (await chat.messages.get(sent.id)).attachments == sent.attachments
    assert await chat.messages.attachment_visible(upload.id, A)
    assert await chat.messages.attachment_visible(upload.id, B)
    assert not await chat.messages.attachment_visible(upload.id, C)  # shares another channel
    assert not await chat.messages.attachment_visible(upload.id, D)
    assert not await chat.messages.attachment_visible(UploadId(42), A)
    await chat.send(other.id, A, "you too", attachments=(upload.id,))
    assert await chat.messages.attachment_visible(upload.id, C)
    await chat.channels.remove_member(private.id, B, chat.now_ms())
    assert not await chat.messages.attachment_visible(upload.id, B)


async def test_only_members_send_and_a_refused_send_stores_nothing(chat: ChatUnderTest) -> None:
    channel = await chat.group(A, B)
    with pytest.raises(Forbidden):
        await chat.messages.send(chat.draft(channel.id, C, "let me in", cmid="c"))
    with pytest.raises(NotFound):
        await chat.messages.send(chat.draft(ChannelId(CHAT_BASE_ID + 999), A, "void", cmid="v"))
    assert (await chat.channels.get(channel.id)).last_seq == 0
    assert await chat.messages.events(channel.id, 0, 10) == ([], False)
    assert await chat.logged(channel.id) == []
    await chat.send(channel.id, B, "still here?", cmid="b")
    await chat.channels.remove_member(channel.id, B, 1)
    with pytest.raises(Forbidden):  # removed: refused even for a retry of an old id
        await chat.messages.send(chat.draft(channel.id, B, "still here?", cmid="b"))


async def test_sends_made_together_each_get_their_own_outcome(chat: ChatUnderTest) -> None:
    """Concurrent sends (which PostgreSQL makes in batches) over several channels: attachments,
    refusals and repeats affect only their own send."""
    first, second = await chat.group(A, B), await chat.group(A, C)
    ups = [Upload(UploadId(chat.next_id()), A, 1, "image/png", f"{n}.png", chat.now_ms())
           for n in range(3)]  # fmt: skip
    for upload in ups:
        await chat.uploads.create(upload)
    drafts = []
    for n in range(40):
        channel = first if n % 2 else second
        attachments = tuple(u.id for u in ups[: n % 4])
        drafts.append(chat.draft(channel.id, A, f"m{n}", attachments=attachments))
    drafts[12] = chat.draft(second.id, B, "not a member")  # Forbidden
    drafts[13] = chat.draft(4242, A, "nowhere")  # NotFound
    drafts[20] = chat.draft(first.id, A, "again", cmid="dup")
    drafts[21] = chat.draft(first.id, A, "again", cmid="dup")  # the same send, repeated
    results = await asyncio.gather(*(chat.messages.send(d) for d in drafts),
                                   return_exceptions=True)  # fmt: skip
    assert isinstance(results[12], Forbidden)
    assert isinstance(results[13], NotFound)
    dup = [results[20], results[21]]
    assert all(isinstance(r, tuple) for r in dup)
    assert sorted(r[1] is None for r in dup if isinstance(r, tuple)) == [False, True]
    assert len({r[0] for r in dup if isinstance(r, tuple)}) == 1  # one stored message
    sent: dict[int, Message] = {}
    for n, result in enumerate(results):
        if n in (12, 13) or not isinstance(result, tuple) or (n in (20, 21) and not result[1]):
            continue
        message, event = result
        assert event is not None and event.message == message
        assert message.attachments == drafts[n].attachments
        sent[n] = message
    assert len(sent) == 37
    await same_as_stored(chat, [first.id, second.id], list(sent.values()))
    for channel_id in (first.id, second.id):  # counters and the sender's read position moved
        channel = await chat.channels.get(channel_id)
        assert channel is not None
        mine = [m for m in sent.values() if m.channel_id == channel_id]
        assert channel.last_seq == channel.msg_count == len(mine)
        read = await chat.channels.membership(channel_id, A)
        assert read is not None
        assert (read.last_read_seq, read.read_msg_no) == (len(mine), len(mine))
    other = await chat.channels.membership(first.id, B)  # only the sender's position moved
    assert other is not None and (other.last_read_seq, other.read_msg_no) == (0, 0)


async def test_a_taken_id_among_sends_made_together_fails_only_its_send(
    chat: ChatUnderTest,
) -> None:
    channel = await chat.group(A, B)
    taken = await chat.send(channel.id, A, "taken")
    drafts = [chat.draft(channel.id, A, f"m{n}") for n in range(10)]
    drafts[4] = replace(drafts[4], id=taken.id)
    results = await asyncio.gather(*(chat.messages.send(d) for d in drafts),
                                   return_exceptions=True)  # fmt: skip
    assert isinstance(results[4], Conflict)
    sent = [r[0] for n, r in enumerate(results) if n != 4 and isinstance(r, tuple)]
    assert len(sent) == 9
    await same_as_stored(chat, [channel.id], [taken, *sent])


async def same_as_stored(chat: ChatUnderTest, channels: list[int], sent: list[Message]) -> None:
    """Each channel's events are gap-free and logged, and hold exactly the ``sent`` messages
    of that channel, as stored."""
    for channel_id in channels:
        events = await all_events(chat, channel_id)
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        assert await chat.logged(channel_id) == [body(e) for e in events]
        stored = {e.message.id: e.message for e in events if e.message is not None}
        mine = {m.id: m for m in sent if m.channel_id == channel_id}
        assert stored == mine
        for m in mine.values():
            assert await chat.messages.get(m.id) == m
