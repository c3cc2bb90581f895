"""chat.frames.seq_slots: a frame cut where its seq goes, for stores that take the seq in the
server (PostgreSQL's chat_send)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from fanout.accounts.model import UserId
from fanout.chat import frames
from fanout.chat.model import ChannelId, EventKind, Message, MessageId, UploadId

ids = st.integers(min_value=1, max_value=2**63 - 1)
seqs = st.integers(min_value=1, max_value=2**62)
# Text that tries to look like the marker: quotes, the key, the marked number, backslashes.
texts = st.one_of(
    st.text(min_size=1, max_size=200),
    st.lists(
        st.sampled_from(['"seq":', str(2**62 + 1), '\\"', "seq", '"', "\\", ":", "1", " "]),
        min_size=1,
        max_size=20,
    ).map("".join),
)


@given(
    seq=seqs,
    channel=ids,
    sender=ids,
    message_id=ids,
    text=texts,
    client_msg_id=texts,
    attachments=st.lists(ids, max_size=3),
    at_ms=st.integers(min_value=0, max_value=2**41),
)
def test_a_new_messages_slots_joined_with_its_seq_are_its_frame(
    seq: int,
    channel: int,
    sender: int,
    message_id: int,
    text: str,
    client_msg_id: str,
    attachments: list[int],
    at_ms: int,
) -> None:
    draft = Message(MessageId(message_id), ChannelId(channel), 0, UserId(sender), client_msg_id,
                    text, tuple(UploadId(a) for a in attachments), at_ms)  # fmt: skip
    slots = frames.seq_slots(ChannelId(channel), "message", at_ms, draft, None)
    assert len(slots) == 3  # the event's seq and the message's own
    _, expected = frames.sequenced(ChannelId(channel), seq, "message", at_ms, draft, None)
    assert str(seq).encode().join(slots) == expected
    assert frames.decode_event(expected).message is not None


@given(seq=seqs, kind=st.sampled_from(["join", "leave", "edit", "delete"]), user=ids)
def test_other_events_have_one_slot(seq: int, kind: EventKind, user: int) -> None:
    channel = ChannelId(7)
    message = None
    if kind in ("edit", "delete"):
        message = Message(MessageId(3), channel, 2, UserId(user), "c", '"seq":1', (), 5)
    who = UserId(user) if message is None else None
    slots = frames.seq_slots(channel, kind, 9, message, who)
    assert len(slots) == 2  # an edited message keeps its own seq
    _, expected = frames.sequenced(channel, seq, kind, 9, message, who)
    assert str(seq).encode().join(slots) == expected
