"""One blocking XREAD loop per process, serving readers of logs written by another process: replies
of other web processes, and agent runs, which Celery workers write."""

import asyncio
import contextvars
import logging

import redis.asyncio as aioredis

from parley.redis_clients import async_client, is_cluster
from streaming.entries import Cursor, Entry
from streaming.keys import STREAM_TAGS, reader_wake_key, tag_of

logger = logging.getLogger(__name__)


class RemoteFeeds:
    """On one server, one loop reads every followed log. On a cluster one XREAD cannot span slots,
    so there is a loop per stream tag in use (streaming/keys.py): at most STREAM_TAGS, each on the
    node that holds its slot, each with its own wake key in that slot."""

    def __init__(self, generator_id: str, client: aioredis.Redis) -> None:
        self.client = client  # for the wake-up writes; the blocking reads get their own pool
        self.generator_id = generator_id
        self.subscribers: dict[str, set[asyncio.Queue[Entry]]] = {}
        self.positions: dict[str, str] = {}
        self.cluster = is_cluster(client)
        self.tasks: dict[str, asyncio.Task[None]] = {}
        # One blocking read per loop: on a cluster each node may serve several tags' loops.
        self.reader = async_client(max_connections=STREAM_TAGS + 4 if self.cluster else 4)

    def group_of(self, key: str) -> str:
        return tag_of(key) if self.cluster else ""

    async def subscribe(self, key: str, cursor: Cursor) -> asyncio.Queue[Entry]:
        """Entries of the log at `key` (streaming/keys.py) after `cursor`, as they arrive."""
        queue: asyncio.Queue[Entry] = asyncio.Queue()
        if key not in self.subscribers:
            self.subscribers[key] = set()
            # A feed that is ahead of a later reader is fine: that reader's own XRANGE covers the gap.
            self.positions[key] = f"{cursor[0]}-{cursor[1]}"
        self.subscribers[key].add(queue)
        group = self.group_of(key)
        task = self.tasks.get(group)
        if task is None or task.done():
            self.tasks[group] = asyncio.create_task(
                self._loop(group), name=f"parley-remote-feeds{group}", context=contextvars.Context()
            )
        else:
            await self.client.xadd(reader_wake_key(self.generator_id, group), {"w": "1"}, maxlen=10)
        return queue

    def unsubscribe(self, key: str, queue: asyncio.Queue[Entry]) -> None:
        queues = self.subscribers.get(key)
        if queues is None:
            return
        queues.discard(queue)
        if not queues:
            del self.subscribers[key]
            self.positions.pop(key, None)

    async def _loop(self, group: str) -> None:
        wake_key, wake_position = reader_wake_key(self.generator_id, group), "$"
        while True:
            streams = {key: position for key, position in self.positions.items() if self.group_of(key) == group}
            if not streams:
                break
            streams[wake_key] = wake_position
            try:
                response = await self.reader.xread(streams, block=1000, count=500)
            except (aioredis.ConnectionError, aioredis.TimeoutError):
                logger.warning("Redis unreachable while following remote replies; retrying")
                await asyncio.sleep(0.5)
                continue
            for raw_key, raw_entries in response or []:
                key = raw_key.decode()
                if key == wake_key:
                    wake_position = raw_entries[-1][0].decode()
                    continue
                if key not in self.subscribers:
                    continue
                self.positions[key] = raw_entries[-1][0].decode()
                for entry_id, fields in raw_entries:
                    entry = Entry.from_redis(entry_id, fields)
                    for queue in self.subscribers[key]:
                        queue.put_nowait(entry)
