-- The platform core: key/value metadata, the log, accounts.

CREATE TABLE meta (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

-- Offsets are the AUTOINCREMENT id: strictly increasing within a partition, never reused.
CREATE TABLE log_records (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    key TEXT NOT NULL,
    payload BLOB NOT NULL,
    headers TEXT,
    created_ms INTEGER NOT NULL
);
CREATE INDEX log_records_by_partition ON log_records (topic, partition, id);

-- Per group and partition: the last offset handed out.
CREATE TABLE log_cursors (
    topic TEXT NOT NULL,
    grp TEXT NOT NULL,
    partition INTEGER NOT NULL,
    last_delivered INTEGER NOT NULL,
    PRIMARY KEY (topic, grp, partition)
) WITHOUT ROWID;

-- Delivered and not yet acknowledged (the pending entries list).
CREATE TABLE log_pending (
    topic TEXT NOT NULL,
    grp TEXT NOT NULL,
    partition INTEGER NOT NULL,
    record_id INTEGER NOT NULL,
    consumer TEXT NOT NULL,
    deliveries INTEGER NOT NULL,
    PRIMARY KEY (topic, grp, partition, record_id)
) WITHOUT ROWID;

CREATE TABLE log_leases (
    topic TEXT NOT NULL,
    grp TEXT NOT NULL,
    partition INTEGER NOT NULL,
    consumer TEXT NOT NULL,
    expires_ms INTEGER NOT NULL,
    PRIMARY KEY (topic, grp, partition)
) WITHOUT ROWID;

CREATE TABLE log_members (
    topic TEXT NOT NULL,
    grp TEXT NOT NULL,
    consumer TEXT NOT NULL,
    expires_ms INTEGER NOT NULL,
    PRIMARY KEY (topic, grp, consumer)
) WITHOUT ROWID;

CREATE TABLE users (
    id INTEGER PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    display_name TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);
