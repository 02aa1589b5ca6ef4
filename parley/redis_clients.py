"""The one place Parley makes Redis clients, all for settings.REDIS_URL.

Sync code (the send transaction's limit check, sign-in throttles, the reaper, Celery tasks) shares
one pooled client per process: a forked Celery worker must not use its parent's sockets, so the
process id is part of the key. Its waits are bounded, since much of that code runs on the database
thread every request shares. Async code (the event-log hub) makes its clients per event loop here.
"""

import os

import redis
import redis.asyncio as aioredis
from django.conf import settings

# The longest any sync caller waits for a Redis that is not answering.
SYNC_TIMEOUT_SECONDS = 2.0

_sync: dict[tuple[int, str], redis.Redis] = {}


def sync_client() -> redis.Redis:
    """This process's shared client: callers never close it."""
    key = (os.getpid(), settings.REDIS_URL)
    made = _sync.get(key)
    if made is None:
        made = _sync[key] = redis.Redis.from_url(
            settings.REDIS_URL, socket_connect_timeout=SYNC_TIMEOUT_SECONDS, socket_timeout=SYNC_TIMEOUT_SECONDS
        )
    return made


def async_client(max_connections: int) -> aioredis.Redis:
    """A client for the running event loop, with a pool of at most `max_connections`."""
    return aioredis.Redis.from_url(settings.REDIS_URL, max_connections=max_connections)


def bounded_async_client(max_connections: int, timeout: float) -> aioredis.Redis:
    """A client for the running event loop whose every wait is bounded by `timeout`: for a free
    connection of its pool (a caller beyond `max_connections` waits rather than fails), to
    connect, and for each reply."""
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.REDIS_URL, max_connections=max_connections, timeout=timeout,
        socket_connect_timeout=timeout, socket_timeout=timeout,
    )
    return aioredis.Redis(connection_pool=pool)
