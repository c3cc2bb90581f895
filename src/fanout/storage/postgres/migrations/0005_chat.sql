-- Chat on PostgreSQL (scaled mode): channels, members with receipts, messages, the per-channel
-- event sequence, search and uploads; the same tables as the embedded 0004_chat.sql.
-- Ids are 64-bit Snowflakes: bigint. Every event row's JSON also goes to log_outbox
-- (topic chat.events) in the transaction that stores it.

CREATE TABLE channels (
    id bigint PRIMARY KEY,
    kind text NOT NULL,  -- dm, group or large
    name text NOT NULL,
    created_by bigint NOT NULL,
    created_ms bigint NOT NULL,
    -- The row lock taken by "SET last_seq = last_seq + 1" serializes a channel's writers:
    -- seqs are gap-free because the increment commits or rolls back with its event.
    last_seq bigint NOT NULL DEFAULT 0,
    msg_count bigint NOT NULL DEFAULT 0,
    member_count integer NOT NULL DEFAULT 0,
    last_event_ms bigint NOT NULL
);

-- One DM per pair of users: (smaller id, larger id).
CREATE TABLE dm_pairs (
    low_id bigint NOT NULL,
    high_id bigint NOT NULL,
    channel_id bigint NOT NULL,
    PRIMARY KEY (low_id, high_id)
);

CREATE TABLE channel_members (
    channel_id bigint NOT NULL,
    user_id bigint NOT NULL,
    last_read_seq bigint NOT NULL DEFAULT 0,
    read_msg_no bigint NOT NULL DEFAULT 0,  -- unread = channels.msg_count - read_msg_no
    last_delivered_seq bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (channel_id, user_id)
);
-- A user's channels (of_user, channel_ids, search's membership check).
CREATE INDEX channel_members_by_user ON channel_members (user_id, channel_id);

CREATE TABLE chat_messages (
    id bigint PRIMARY KEY,
    channel_id bigint NOT NULL,
    seq bigint NOT NULL,  -- the seq of the event that created it
    sender_id bigint NOT NULL,
    client_msg_id text COLLATE "C" NOT NULL,
    text text NOT NULL,
    attachments bigint[] NOT NULL DEFAULT '{}',
    created_ms bigint NOT NULL,
    edited_ms bigint,
    deleted boolean NOT NULL DEFAULT false,
    -- Maintained by the adapter, not generated: it indexes the words as the application folds
    -- them (lower case without diacritics, in Python), because PostgreSQL's 'simple'
    -- configuration lower-cases only ASCII under the C locale. Empty once deleted.
    search tsvector NOT NULL
);
-- Idempotent send: the one stored message per (channel, sender, client_msg_id).
CREATE UNIQUE INDEX chat_messages_idempotency ON chat_messages (channel_id, sender_id, client_msg_id);
-- History pages: a backward range scan per channel.
CREATE UNIQUE INDEX chat_messages_by_seq ON chat_messages (channel_id, seq);
CREATE INDEX chat_messages_search ON chat_messages USING gin (search);

-- The gap-free sequence: msg_no = messages in the channel up to and including this event.
CREATE TABLE chat_events (
    channel_id bigint NOT NULL,
    seq bigint NOT NULL,
    msg_no bigint NOT NULL,
    body bytea NOT NULL,  -- the event's JSON frame, as sent to clients and to chat.events
    PRIMARY KEY (channel_id, seq)
);

CREATE TABLE uploads (
    id bigint PRIMARY KEY,
    owner_id bigint NOT NULL,
    size bigint NOT NULL,
    content_type text NOT NULL,
    filename text NOT NULL,
    created_ms bigint NOT NULL
);

CREATE TABLE chat_attachments (
    upload_id bigint NOT NULL,
    message_id bigint NOT NULL,
    channel_id bigint NOT NULL,
    PRIMARY KEY (upload_id, message_id)
);
