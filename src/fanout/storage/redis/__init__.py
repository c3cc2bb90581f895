"""Redis adapters (scaled mode): the Redis Streams log, rate limiting, Snowflake worker ids.

Every key format lives in :mod:`fanout.storage.redis.keys`; connections are built by
:func:`fanout.storage.redis.connection.connect`, which is also where driver errors become
:class:`fanout.core.errors.Unavailable`.
"""
