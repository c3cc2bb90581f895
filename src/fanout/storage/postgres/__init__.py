"""PostgreSQL adapters (scaled mode): the engine, numbered schema migrations, one store per area.

Only durable account-like state lives here; the log is Redis Streams in scaled mode.
"""
