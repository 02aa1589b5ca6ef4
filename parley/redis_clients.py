"""The one place Parley makes Redis clients, all for settings.REDIS_URL: one server, a cluster or a
primary found through Sentinel (parley/redis_urls.py, docs/redis.md).

Sync code (the send transaction's limit check, sign-in throttles, the reaper, Celery tasks) shares
one pooled client per process: a forked Celery worker must not use its parent's sockets, so the
process id is part of the key. Its waits are bounded, since much of that code runs on the database
thread every request shares. Async code (the event-log hub) makes its clients per event loop here.

A cluster client routes each command by its key; a command or script over several keys needs them
in one slot, which the key builders see to with hash tags. `get_many` reads keys of any slots.
"""

import asyncio
import os
from typing import Any

import redis
import redis.asyncio as aioredis
import redis.asyncio.sentinel as aiosentinel
from django.conf import settings
from redis.asyncio.cluster import ClusterNode as AsyncClusterNode
from redis.asyncio.cluster import ClusterPipeline as AsyncClusterPipeline
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode
from redis.retry import Retry
from redis.sentinel import MasterNotFoundError

from parley.env import env_bool, env_str
from parley.redis_urls import RedisTarget, parse

# The longest any sync caller waits for a Redis that is not answering.
SYNC_TIMEOUT_SECONDS = 2.0

_sync: dict[tuple[int, str], redis.Redis] = {}


def _auth(target: RedisTarget) -> dict[str, Any]:
    return {"username": target.username, "password": target.password, "ssl": target.tls}


def _sentinel_credentials() -> tuple[str, str, bool]:
    """The Sentinels' own username, password and TLS (a Sentinel may ask for a password the primary
    does not); before Django starts (bin/parley run's and the test runner's checks), the same
    variables from the environment."""
    if settings.configured:
        return settings.REDIS_SENTINEL_USERNAME, settings.REDIS_SENTINEL_PASSWORD, settings.REDIS_SENTINEL_TLS
    return env_str("REDIS_SENTINEL_USERNAME"), env_str("REDIS_SENTINEL_PASSWORD"), env_bool("REDIS_SENTINEL_TLS")


def _sentinel_options(options: dict[str, Any], retry: Retry | AsyncRetry) -> dict[str, Any]:
    """How to reach the Sentinels: the caller's socket timeouts and their credentials. `retry` asks
    each Sentinel once: a lookup goes on to the next Sentinel, and the client's own retries repeat
    the lookup (redis-py's default spent 4 s retrying a refused password)."""
    username, password, tls = _sentinel_credentials()
    sockets = {name: value for name, value in options.items() if name.startswith("socket_")}
    return {**sockets, "username": username or None, "password": password or None, "ssl": tls, "retry": retry}


def sentinel_refusal(error: Exception) -> str | None:
    """What a failed primary lookup means when the Sentinels refused to answer for want of the
    right password: redis-py reports it with the clients' reprs, which say little."""
    if not isinstance(error, MasterNotFoundError | aiosentinel.MasterNotFoundError) or "AuthenticationError" not in str(error):
        return None
    if _sentinel_credentials()[1]:
        return "The Sentinels refused REDIS_SENTINEL_PASSWORD (and REDIS_SENTINEL_USERNAME, if set): check it."
    return "The Sentinels ask for a password (Authentication required): set REDIS_SENTINEL_PASSWORD."


def sync_client_for(url: str, **options: Any) -> redis.Redis:
    """A new sync client for `url`; `options` are socket timeouts and the like."""
    target = parse(url)
    if target.kind == "cluster":
        nodes = [ClusterNode(host, port) for host, port in target.nodes]
        return redis.RedisCluster(startup_nodes=nodes, **_auth(target), **options)  # type: ignore[return-value]
    if target.kind == "sentinel":
        sentinel = redis.Sentinel(
            list(target.nodes), sentinel_kwargs=_sentinel_options(options, Retry(NoBackoff(), 0)), **options
        )
        return sentinel.master_for(target.service, db=target.db, **_auth(target), **options)
    return redis.Redis.from_url(url, **options)


def async_client_for(url: str, max_connections: int, **options: Any) -> aioredis.Redis:
    """A new client for the running event loop; a cluster's pool holds `max_connections` per node."""
    target = parse(url)
    if target.kind == "cluster":
        nodes = [AsyncClusterNode(host, port) for host, port in target.nodes]
        return aioredis.RedisCluster(  # type: ignore[return-value]
            startup_nodes=nodes, max_connections=max_connections, **_auth(target), **options
        )
    if target.kind == "sentinel":
        sentinel = aiosentinel.Sentinel(
            list(target.nodes), sentinel_kwargs=_sentinel_options(options, AsyncRetry(NoBackoff(), 0)), **options
        )
        return sentinel.master_for(
            target.service, db=target.db, max_connections=max_connections, **_auth(target), **options
        )
    return aioredis.Redis.from_url(url, max_connections=max_connections, **options)


def sync_client() -> redis.Redis:
    """This process's shared client: callers never close it."""
    key = (os.getpid(), settings.REDIS_URL)
    made = _sync.get(key)
    if made is None:
        made = _sync[key] = sync_client_for(
            settings.REDIS_URL, socket_connect_timeout=SYNC_TIMEOUT_SECONDS, socket_timeout=SYNC_TIMEOUT_SECONDS
        )
    return made


def async_client(max_connections: int) -> aioredis.Redis:
    """A client for the running event loop, with a pool of at most `max_connections`."""
    return async_client_for(settings.REDIS_URL, max_connections)


def bounded_async_client(max_connections: int, timeout: float) -> aioredis.Redis:
    """A client for the running event loop whose every wait is bounded by `timeout`: for a free
    connection of its pool (a caller beyond `max_connections` waits rather than fails), to
    connect, and for each reply."""
    target, timeouts = parse(settings.REDIS_URL), {"socket_connect_timeout": timeout, "socket_timeout": timeout}
    if target.kind == "cluster":
        nodes = [AsyncClusterNode(host, port) for host, port in target.nodes]
        made = _QueuedCluster(startup_nodes=nodes, max_connections=max_connections, **_auth(target), **timeouts)
        return _queued(made, max_connections, timeout)
    if target.kind == "sentinel":
        sentinel = aiosentinel.Sentinel(list(target.nodes), **timeouts)
        made = sentinel.master_for(
            target.service, redis_class=_QueuedRedis, db=target.db, max_connections=max_connections,
            **_auth(target), **timeouts,
        )
        return _queued(made, max_connections, timeout)
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.REDIS_URL, max_connections=max_connections, timeout=timeout,
        socket_connect_timeout=timeout, socket_timeout=timeout,
    )
    return aioredis.Redis(connection_pool=pool)


class _Queued:
    """Callers beyond the pool's size wait for a turn (for `queue_timeout` at most) instead of
    failing: a cluster node's pool, and a Sentinel one, refuse a connection past their size at once."""

    _turns: asyncio.Semaphore
    _queue_timeout: float

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        try:
            await asyncio.wait_for(self._turns.acquire(), self._queue_timeout)
        except TimeoutError:
            raise redis.exceptions.ConnectionError("No free Redis connection in time") from None
        try:
            return await super().execute_command(*args, **kwargs)  # type: ignore[misc]
        finally:
            self._turns.release()


class _QueuedCluster(_Queued, aioredis.RedisCluster):
    pass


class _QueuedRedis(_Queued, aioredis.Redis):
    pass


def _queued(client: Any, max_connections: int, timeout: float) -> Any:
    client._turns, client._queue_timeout = asyncio.Semaphore(max_connections), timeout
    return client


def is_cluster(client: object) -> bool:
    """Whether `client` (or a pipeline of one) routes commands over a cluster's nodes."""
    return isinstance(client, (redis.RedisCluster, aioredis.RedisCluster, AsyncClusterPipeline))


def get_many(client: redis.Redis, keys: list[str]) -> list[bytes | None]:
    """MGET for keys of any slots: one round trip on one server, one per node on a cluster."""
    if not keys:
        return []
    if isinstance(client, redis.RedisCluster):
        return client.mget_nonatomic(keys)
    return client.mget(keys)
