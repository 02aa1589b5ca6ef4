"""Per-reply event logs: Redis Streams written in batches, read locally from memory or remotely.

The async writer and reader, one `EventLog` per web process (per event loop). Generations running
in the process append text to their `LocalLog`; a single flush loop turns each log's pending text
into one delta entry per tick, writes every log's new entries to Redis in one pipeline, checks stop
flags for all local generations in the same round trip, refreshes the process heartbeat, and then
wakes local readers. Readers of generations running in another process share one blocking `XREAD`
loop (streaming/remote.py). Sync code writes the same entries with streaming/writer.py.
"""

import asyncio
import contextlib
import contextvars
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import redis.asyncio as aioredis
from django.conf import settings

from parley.redis_clients import async_client, is_cluster
from streaming import events
from streaming.entries import FINAL_SEQ, Cursor, Entry, visible
from streaming.keys import events_key, heartbeat_key, run_events_key, stop_key
from streaming.remote import RemoteFeeds
from streaming.writer import STOP_FLAG_SECONDS

logger = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(eq=False)
class LocalLog:
    """The in-memory log of a generation running in this process."""

    message_id: int
    entries: list[Entry] = field(default_factory=list)
    unsent: list[Entry] = field(default_factory=list)  # entries not yet written to Redis
    pending: list[str] = field(default_factory=list)
    offset: int = 0
    final_event: dict[str, Any] | None = None
    finished: bool = False
    stop_requested: bool = False
    on_stop: Callable[[], None] | None = None
    on_first_text: Callable[[], None] | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def append(self, text: str) -> None:
        if text:
            if not self.offset and self.on_first_text is not None:
                self.on_first_text()  # the first token goes out at once: it is what the user waits for
            self.pending.append(text)
            self.offset += len(text)

    def text(self) -> str:
        return "".join(entry.text for entry in self.entries) + "".join(self.pending)

    def finish(self, final_event: events.DoneEvent | events.ErrorEvent) -> None:
        self.final_event = dict(final_event)

    def request_stop(self) -> None:
        if not self.stop_requested:
            self.stop_requested = True
            if self.on_stop is not None:
                self.on_stop()

    def drain(self) -> list[Entry]:
        """Turn pending text and a pending final event into entries (called by the flush loop)."""
        new: list[Entry] = []
        if self.pending:
            text = "".join(self.pending)
            self.pending.clear()
            new.append(Entry.of(events.delta(self.message_id, self.offset, text)))
        if self.final_event is not None and not self.finished:
            self.final_event["cursor"] = events.cursor_for(self.offset, FINAL_SEQ)
            new.append(Entry.of(self.final_event))
            self.finished = True
        self.entries.extend(new)
        self.unsent.extend(new)
        return new

    def wake_readers(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()


# How long a finished reply's log stays in memory. Its entries are most of what the process
# holds under load, and every full garbage collection walks them (docs/benchmarks.md).
FINISHED_LOG_SECONDS = 5.0


class EventLog:
    def __init__(self, client: aioredis.Redis | None = None) -> None:
        self.generator_id = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.redis = client or async_client(max_connections=1000)
        self.cluster = is_cluster(self.redis)
        self.logs: dict[int, LocalLog] = {}
        self.writing = 0  # logs still being written: the load that sets the flush window
        self.remote = RemoteFeeds(self.generator_id, self.redis)
        self.flush_task: asyncio.Task[None] | None = None
        self.work = asyncio.Event()
        self.soon = asyncio.Event()  # set when a log got its first text: flush without waiting out the window
        self.flush_waiters: list[asyncio.Future[None]] = []
        self.last_heartbeat = 0.0

    # Writing -------------------------------------------------------------------------------------

    def open_log(self, message_id: int) -> LocalLog:
        log = LocalLog(message_id, on_first_text=self.soon.set)
        self.logs[message_id] = log
        self.writing += 1
        self._ensure_flusher()
        return log

    def close_log(self, log: LocalLog) -> None:
        """Called once the final event is queued (and the reply stored); the log stays readable for
        readers already following it, then the database answers."""
        self.writing -= 1
        self.work.set()
        asyncio.get_running_loop().call_later(FINISHED_LOG_SECONDS, self._forget, log)

    def _forget(self, log: LocalLog) -> None:
        if log.pending or log.unsent:  # Redis has not taken every entry yet (it may be down): not before it has
            asyncio.get_running_loop().call_later(FINISHED_LOG_SECONDS, self._forget, log)
            return
        if self.logs.get(log.message_id) is log:
            del self.logs[log.message_id]

    async def clear(self, message_id: int) -> None:
        """Ids can repeat after a database is reset against a long-lived Redis: start from a clean log."""
        await self.redis.delete(events_key(message_id), stop_key(message_id))

    def _ensure_flusher(self) -> None:
        if self.flush_task is None or self.flush_task.done():
            self.flush_task = asyncio.create_task(self._flush_loop(), name="parley-flush", context=contextvars.Context())
        self.work.set()

    async def next_flush(self) -> None:
        """Return just before the next flush drains the logs.

        A generation whose provider buffers its stream in a socket waits here between reads: it
        then reads every token that arrived during the window in one go, instead of waking once
        per token, and its text still makes this flush.
        """
        waiter = asyncio.get_running_loop().create_future()  # one each: cancelling one waiter must not cancel others
        self.flush_waiters.append(waiter)
        self._ensure_flusher()
        await waiter

    async def _release_flush_waiters(self) -> None:
        waiters, self.flush_waiters = self.flush_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
        if waiters:
            await asyncio.sleep(0)  # the woken generations read and append before the logs are drained

    def flush_interval(self) -> float:
        """Wider windows under load: fewer frames and Redis writes when hundreds of replies run."""
        low, high = settings.PARLEY_FLUSH_MS_MIN, settings.PARLEY_FLUSH_MS_MAX
        # Quadratic: close to the minimum for tens of replies (smooth text, relay delay within ~40 ms
        # at 50), the maximum at 200, where frames and Redis writes are what the CPU goes to.
        load = min(1.0, self.writing / 200) ** 2
        return (low + (high - low) * load) / 1000

    async def _flush_loop(self) -> None:
        while True:
            if not self._has_work():
                self.work.clear()
                await self.work.wait()
            if not self.soon.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.flush_interval()):
                        await self.soon.wait()
            self.soon.clear()
            await self._release_flush_waiters()
            try:
                await self.flush()
            except (aioredis.ConnectionError, aioredis.TimeoutError):
                logger.exception("Redis unreachable while flushing reply events; will retry")
                await asyncio.sleep(0.2)

    def _has_work(self) -> bool:
        return self.writing > 0 or bool(self.flush_waiters) or any(
            log.pending or log.unsent or (log.final_event and not log.finished) for log in self.logs.values()
        )

    async def flush(self) -> None:
        """One pipelined round trip: new entries of every log, stop-flag check, heartbeat."""
        pipe = self.redis.pipeline(transaction=False)
        touched: list[LocalLog] = []
        for log in list(self.logs.values()):
            if log.finished and not log.pending and not log.unsent:
                continue
            log.drain()
            if not log.unsent:
                continue
            # Entries stay unsent until Redis took them, so a failed flush is retried whole, in order;
            # an entry that did land the first time is refused as a duplicate id, which is harmless.
            key = events_key(log.message_id)
            for entry in log.unsent:
                pipe.xadd(key, entry.redis_fields, id=entry.cursor)
            ttl = settings.PARLEY_STREAM_TTL if log.finished else max(settings.PARLEY_STREAM_TTL, 86_400)
            if log.finished or len(log.entries) == len(log.unsent):
                pipe.expire(key, ttl)
            touched.append(log)
        watched = [log for log in self.logs.values() if not log.finished and not log.stop_requested]
        flags_at = len(pipe)
        if watched and self.cluster:  # stop flags live in many slots: one GET each, routed by key
            for log in watched:
                pipe.get(stop_key(log.message_id))
        elif watched:
            pipe.mget([stop_key(log.message_id) for log in watched])
        now = time.monotonic()
        if self.writing and now - self.last_heartbeat >= settings.PARLEY_HEARTBEAT_SECONDS:
            pipe.set(heartbeat_key(self.generator_id), "1", ex=settings.PARLEY_HEARTBEAT_TTL)
            self.last_heartbeat = now
        if not len(pipe):
            return
        results = await pipe.execute(raise_on_error=False)
        for result in results:
            if isinstance(result, Exception) and not _is_duplicate_id(result):
                logger.error("Redis refused a reply event: %s", result)
        if watched:
            flags = results[flags_at : flags_at + len(watched)] if self.cluster else results[flags_at]
            for log, flag in zip(watched, flags if isinstance(flags, list) else [], strict=False):
                if flag is not None and not isinstance(flag, Exception):
                    log.request_stop()
        for log in touched:
            log.unsent.clear()
            log.wake_readers()

    async def flush_before_exit(self) -> None:
        """The process is stopping: hand Redis what is left, so readers elsewhere finish at once
        instead of when the reaper notices the missing heartbeat."""
        try:
            await self.flush()
        except (aioredis.ConnectionError, aioredis.TimeoutError):
            logger.warning("Redis unreachable at shutdown; the reaper will end the remaining replies")

    # Stop ----------------------------------------------------------------------------------------

    async def request_stop(self, message_id: int) -> None:
        """Stop a generation wherever it runs: locally at once, elsewhere at that process's next flush."""
        log = self.logs.get(message_id)
        if log is not None and not log.finished:
            log.request_stop()
        await self.redis.set(stop_key(message_id), "1", ex=STOP_FLAG_SECONDS)

    # Reading -------------------------------------------------------------------------------------

    def is_local(self, message_id: int) -> bool:
        return message_id in self.logs

    async def follow(self, message_id: int, cursor: Cursor, idle: float | None = None) -> AsyncIterator[list[Entry]]:
        """Yield batches of entries after `cursor` until the final entry (which is always yielded).
        With `idle`, an empty batch after that many seconds without news: a door's cue to keep its
        connection alive, without a task of its own per reader."""
        log = self.logs.get(message_id)
        if log is not None:
            async for batch in _follow_local(log, cursor, idle):
                yield batch
            return
        async for batch in self._follow_remote(events_key(message_id), cursor, idle):
            yield batch

    async def follow_run(self, run_id: int, cursor: Cursor, idle: float | None = None) -> AsyncIterator[list[Entry]]:
        """`follow` for an agent run's log: always written elsewhere, by a Celery worker."""
        async for batch in self._follow_remote(run_events_key(run_id), cursor, idle):
            yield batch

    async def _follow_remote(self, key: str, cursor: Cursor, idle: float | None) -> AsyncIterator[list[Entry]]:
        queue = await self.remote.subscribe(key, cursor)
        try:
            raw = await self.redis.xrange(key, min=f"({cursor[0]}-{cursor[1]}" if cursor != (0, 0) else "-")
            batch = visible([Entry.from_redis(entry_id, fields) for entry_id, fields in raw], cursor)
            while True:
                if batch:
                    yield batch
                    cursor = batch[-1].id
                    if batch[-1].is_final:
                        return
                entry = await _within(idle, queue.get())
                if entry is None:
                    yield []
                    continue
                pending = [entry]
                while not queue.empty():
                    pending.append(queue.get_nowait())
                batch = visible(pending, cursor)
        finally:
            self.remote.unsubscribe(key, queue)

    async def read_run(self, run_id: int) -> list[Entry]:
        raw = await self.redis.xrange(run_events_key(run_id))
        return [Entry.from_redis(entry_id, fields) for entry_id, fields in raw]

    async def read_all(self, message_id: int) -> list[Entry]:
        raw = await self.redis.xrange(events_key(message_id))
        return [Entry.from_redis(entry_id, fields) for entry_id, fields in raw]


async def _follow_local(log: LocalLog, cursor: Cursor, idle: float | None) -> AsyncIterator[list[Entry]]:
    index = 0
    while True:
        changed = log.changed
        entries = log.entries
        batch = visible(entries[index:], cursor)
        index = len(entries)
        if batch:
            yield batch
            cursor = batch[-1].id
            if batch[-1].is_final:
                return
        if await _within(idle, changed.wait()) is None:
            yield []


async def _within(idle: float | None, news: Awaitable[T]) -> T | None:
    """What a reader awaits, or None once it has waited `idle` seconds (a cue to keep its
    connection alive); without `idle` it waits as long as it takes."""
    try:
        async with asyncio.timeout(idle):
            return await news
    except TimeoutError:
        return None


def _is_duplicate_id(error: Exception) -> bool:
    return "equal or smaller than the target stream top item" in str(error)
