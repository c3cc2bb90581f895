-- Chat: channels, members with receipts, messages, the per-channel event sequence, search,
-- uploads.

CREATE TABLE channels (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    created_by INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    last_seq INTEGER NOT NULL DEFAULT 0,
    msg_count INTEGER NOT NULL DEFAULT 0,
    member_count INTEGER NOT NULL DEFAULT 0,
    last_event_ms INTEGER NOT NULL
);

CREATE TABLE dm_pairs (
    low_id INTEGER NOT NULL,
    high_id INTEGER NOT NULL,
    channel_id INTEGER NOT NULL,
    PRIMARY KEY (low_id, high_id)
) WITHOUT ROWID;

CREATE TABLE channel_members (
    channel_id INTEGER NOT NULL,
    user_id INTEGER NOT NULL,
    last_read_seq INTEGER NOT NULL DEFAULT 0,
    read_msg_no INTEGER NOT NULL DEFAULT 0,
    last_delivered_seq INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (channel_id, user_id)
) WITHOUT ROWID;
CREATE INDEX channel_members_by_user ON channel_members (user_id, channel_id);

CREATE TABLE chat_messages (
    id INTEGER PRIMARY KEY,
    channel_id INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    sender_id INTEGER NOT NULL,
    client_msg_id TEXT NOT NULL,
    text TEXT NOT NULL,
    attachments TEXT NOT NULL,  -- JSON array of upload ids
    created_ms INTEGER NOT NULL,
    edited_ms INTEGER,
    deleted INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX chat_messages_idempotency ON chat_messages (channel_id, sender_id, client_msg_id);
CREATE UNIQUE INDEX chat_messages_by_seq ON chat_messages (channel_id, seq);

-- The gap-free sequence: msg_no = messages in the channel up to and including this event.
CREATE TABLE chat_events (
    channel_id INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    msg_no INTEGER NOT NULL,
    body BLOB NOT NULL,  -- the event's JSON frame, as sent to clients
    PRIMARY KEY (channel_id, seq)
) WITHOUT ROWID;

-- Full-text search over live messages; rowid = message id.
CREATE VIRTUAL TABLE chat_search USING fts5(text, tokenize = 'unicode61 remove_diacritics 2');

CREATE TABLE uploads (
    id INTEGER PRIMARY KEY,
    owner_id INTEGER NOT NULL,
    size INTEGER NOT NULL,
    content_type TEXT NOT NULL,
    filename TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);

CREATE TABLE chat_attachments (
    upload_id INTEGER NOT NULL,
    message_id INTEGER NOT NULL,
    channel_id INTEGER NOT NULL,
    PRIMARY KEY (upload_id, message_id)
) WITHOUT ROWID;
