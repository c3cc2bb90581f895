"""The chat tables' column lists, the same on SQLite and PostgreSQL: each store's row readers
take rows selected with these, in this order."""

from __future__ import annotations

__all__ = ["CHANNEL_COLUMNS", "MEMBER_COLUMNS", "MESSAGE_COLUMNS"]

CHANNEL_COLUMNS = "id, kind, name, created_by, created_ms, last_seq, msg_count, member_count"
MEMBER_COLUMNS = "channel_id, user_id, last_read_seq, read_msg_no, last_delivered_seq"
MESSAGE_COLUMNS = (
    "id, channel_id, seq, sender_id, client_msg_id, text, attachments, created_ms, edited_ms,"
    " deleted"
)
