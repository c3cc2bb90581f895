-- Transactional outbox: log records written in the same transaction as the rows they describe,
-- moved to Redis Streams by fanout.storage.postgres.outbox.OutboxRelay (oldest id first), then
-- deleted. The table is normally near empty: rows live from their commit to the next relay pass.

CREATE TABLE log_outbox (
    -- bigserial on purpose (ids elsewhere are Snowflakes): the sequence gives the relay one
    -- total order consistent with causality (a write that saw another's commit gets a higher id).
    id bigserial PRIMARY KEY,
    topic text NOT NULL,
    key text NOT NULL,
    payload bytea NOT NULL,
    -- Server time, for an operator measuring relay lag; nothing in the code reads it.
    created_ms bigint NOT NULL DEFAULT (extract(epoch FROM clock_timestamp()) * 1000)::bigint
);
