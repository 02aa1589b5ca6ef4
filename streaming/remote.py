"""One blocking XREAD loop per process, serving readers of logs written by another process: replies
of other web processes, and agent runs, which Celery workers write."""

import asyncio
import contextvars
import logging

import redis.asyncio as aioredis

from parley.redis_clients import async_client
from streaming.entries import Cursor, Entry
from streaming.keys import reader_wake_key

logger = logging.getLogger(__name__)


class RemoteFeeds:
    def __init__(self, generator_id: str, client: aioredis.Redis) -> None:
        self.client = client  # for the wake-up writes; the blocking reads get their own pool
        self.subscribers: dict[str, set[asyncio.Queue[Entry]]] = {}
        self.positions: dict[str, str] = {}
        self.wake_key = reader_wake_key(generator_id)
        self.task: asyncio.Task[None] | None = None
        self.reader = async_client(max_connections=4)

    async def subscribe(self, key: str, cursor: Cursor) -> asyncio.Queue[Entry]:
        """Entries of the log at `key` (streaming/keys.py) after `cursor`, as they arrive."""
        queue: asyncio.Queue[Entry] = asyncio.Queue()
        if key not in self.subscribers:
            self.subscribers[key] = set()
            # A feed that is ahead of a later reader is fine: that reader's own XRANGE covers the gap.
            self.positions[key] = f"{cursor[0]}-{cursor[1]}"
        self.subscribers[key].add(queue)
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._loop(), name="parley-remote-feeds", context=contextvars.Context())
        else:
            await self.client.xadd(self.wake_key, {"w": "1"}, maxlen=10)
        return queue

    def unsubscribe(self, key: str, queue: asyncio.Queue[Entry]) -> None:
        queues = self.subscribers.get(key)
        if queues is None:
            return
        queues.discard(queue)
        if not queues:
            del self.subscribers[key]
            self.positions.pop(key, None)

    async def _loop(self) -> None:
        wake_position = "$"
        while self.subscribers:
            streams = dict(self.positions)
            streams[self.wake_key] = wake_position
            try:
                response = await self.reader.xread(streams, block=1000, count=500)
            except (aioredis.ConnectionError, aioredis.TimeoutError):
                logger.warning("Redis unreachable while following remote replies; retrying")
                await asyncio.sleep(0.5)
                continue
            for raw_key, raw_entries in response or []:
                key = raw_key.decode()
                if key == self.wake_key:
                    wake_position = raw_entries[-1][0].decode()
                    continue
                if key not in self.subscribers:
                    continue
                self.positions[key] = raw_entries[-1][0].decode()
                for entry_id, fields in raw_entries:
                    entry = Entry.from_redis(entry_id, fields)
                    for queue in self.subscribers[key]:
                        queue.put_nowait(entry)
