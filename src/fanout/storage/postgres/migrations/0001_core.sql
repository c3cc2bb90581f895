-- The platform core on PostgreSQL: key/value metadata (shared secrets) and accounts.
-- The log is not here: in scaled mode it lives in Redis Streams.

CREATE TABLE meta (
    name text PRIMARY KEY,
    value text NOT NULL
);

-- Ids are 64-bit Snowflakes: bigint, never serial.
CREATE TABLE users (
    id bigint PRIMARY KEY,
    username text NOT NULL UNIQUE,
    display_name text NOT NULL,
    password_hash text NOT NULL,
    created_ms bigint NOT NULL
);
