"""The project's one way to open an asyncio Redis client.

``Redis.from_url`` gives a client that never retries: after Redis restarts, every
connection idle in the pool is dead, and the first command on each fails ("Connection
closed by server") although Redis is back. One immediate retry on a fresh connection
covers that; more, with redis-py's backoff, would hold a caller for seconds while Redis
is really gone, and the callers here (a request, a tick, an API read) would rather fail
fast and say so.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # redis is an extra of the library
    import redis.asyncio as aioredis


def connect(
    url: str,
    *,
    timeout_s: float,
    connect_timeout_s: float,
    health_check_s: float = 0,
) -> aioredis.Redis:
    """A client for ``url``: a command waits at most ``timeout_s`` seconds for its
    reply and a new connection ``connect_timeout_s``; a connection idle longer than
    ``health_check_s`` seconds (0: never) is pinged before it is used. Raises
    ``ImportError`` when redis-py is not installed."""
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    return aioredis.Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=connect_timeout_s,
        retry=Retry(NoBackoff(), 1),
        health_check_interval=health_check_s,
    )
