"""PostgreSQL adapters (asyncpg): the durable state of scaled mode — accounts, secrets, posts,
the follow graph — and the transactional outbox that relays their log records to Redis."""
