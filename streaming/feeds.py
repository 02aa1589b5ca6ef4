"""Per-user notices to every open tab: a reply started elsewhere, a conversation got its title.

Each web process holds one pattern subscription for all users and hands notices to the sockets it
serves; a send costs one PUBLISH. Notices are hints: a tab that misses one still sees the state
on reload, since the database and the event logs are the truth.
"""

import asyncio
import contextvars
import logging
from collections.abc import Callable, Mapping
from typing import Any

import orjson
import redis
import redis.asyncio as aioredis

from parley.redis_clients import is_cluster, sync_client
from streaming.keys import user_channel

logger = logging.getLogger(__name__)
Listener = Callable[[bytes], None]


def publish_sync(user_id: int, event: Mapping[str, Any]) -> None:
    """For Celery tasks and other sync code. A notice is a hint, so one that cannot be sent is logged."""
    try:
        sync_client().publish(user_channel(user_id), orjson.dumps(event))
    except redis.RedisError:
        logger.warning("A %s notice to user %s was not sent: Redis is unreachable", event.get("type"), user_id)


class UserFeeds:
    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self.listeners: dict[int, set[Listener]] = {}
        self.task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()

    async def publish(self, user_id: int, event: Mapping[str, Any]) -> None:
        await self.client.publish(user_channel(user_id), orjson.dumps(event))

    async def listen(self, user_id: int, listener: Listener) -> None:
        self.listeners.setdefault(user_id, set()).add(listener)
        if self.task is None or self.task.done():
            self.ready.clear()
            self.task = asyncio.create_task(self._loop(), name="parley-user-feeds", context=contextvars.Context())
        await self.ready.wait()

    def stop_listening(self, user_id: int, listener: Listener) -> None:
        listeners = self.listeners.get(user_id)
        if listeners is not None:
            listeners.discard(listener)
            if not listeners:
                del self.listeners[user_id]

    async def _loop(self) -> None:
        prefix = user_channel(0)[:-1]
        while True:
            if is_cluster(self.client):
                # A cluster client learns its slots on its first command; the subscription picks its
                # node from them. Any one node will do: a classic PUBLISH reaches every node.
                try:
                    await self.client.initialize()
                except aioredis.RedisError:
                    logger.warning("Redis Cluster unreachable for the per-user notices; retrying")
                    await asyncio.sleep(0.5)
                    continue
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.psubscribe(prefix + "*")
                self.ready.set()
                while True:
                    message = await pubsub.get_message(timeout=30.0)
                    if message is None:
                        continue
                    channel = message["channel"].decode()
                    self._dispatch(int(channel[len(prefix):]), message["data"])
            except (aioredis.ConnectionError, aioredis.TimeoutError, ValueError):
                logger.warning("Lost the per-user notice subscription; resubscribing")
                await asyncio.sleep(0.5)
            finally:
                await pubsub.aclose()

    def _dispatch(self, user_id: int, payload: bytes) -> None:
        for listener in list(self.listeners.get(user_id, ())):
            try:
                listener(payload)
            except Exception:  # one broken socket must not starve the others
                logger.exception("A notice listener failed")
