"""Per-message event logs: Redis Streams written in batches, read locally from memory or remotely.

One `Hub` lives in each web process (per event loop). Generations running in the process append
text to their `LocalLog`; a single flush loop turns each log's pending text into one delta entry per
tick, writes every log's new entries to Redis in one pipeline, checks stop flags for all local
generations in the same round trip, refreshes the process heartbeat, and then wakes local readers.
Readers of generations running in another process share one blocking `XREAD` loop.

Entry ids are "<offset>-<seq>" (see chat/events.py), so ids are cursors and also text positions.
"""

import asyncio
import contextlib
import contextvars
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis.asyncio as aioredis
from django.conf import settings

from chat.notify import UserFeeds
from parley.redis_clients import async_client

logger = logging.getLogger(__name__)

Cursor = tuple[int, int]
FINAL_SEQ = 1


def events_key(message_id: int) -> str:
    return f"{settings.PARLEY_KEY_PREFIX}:msg:{message_id}:events"


def stop_key(message_id: int) -> str:
    return f"{settings.PARLEY_KEY_PREFIX}:msg:{message_id}:stop"


def heartbeat_key(generator_id: str) -> str:
    return f"{settings.PARLEY_KEY_PREFIX}:generator:{generator_id}"


def parse_entry_id(raw: bytes | str) -> Cursor:
    text = raw.decode() if isinstance(raw, bytes) else raw
    offset, _, seq = text.partition("-")
    return int(offset), int(seq or 0)


@dataclass(slots=True)
class Entry:
    """One event of a reply's log: a delta (seq 0) or the final event (seq 1)."""

    id: Cursor
    payload: bytes  # the event's JSON exactly as it goes on the wire
    text: str = ""  # the delta's text, for trimming and merging

    @property
    def is_final(self) -> bool:
        return self.id[1] == FINAL_SEQ

    @property
    def start(self) -> int:
        return self.id[0] - len(self.text)

    def after(self, cursor: Cursor) -> "Entry | None":
        """This entry as seen by a reader at `cursor`: whole, trimmed to what is new, or None."""
        if self.is_final:
            return self  # the final event is always delivered, even to a reader that saw it before
        if self.id <= cursor:
            return None
        if self.start >= cursor[0]:
            return self
        text = self.text[cursor[0] - self.start :]
        event = orjson.loads(self.payload)
        event["text"] = text
        return Entry(self.id, orjson.dumps(event), text)

    @classmethod
    def from_redis(cls, entry_id: bytes, fields: dict[bytes, bytes]) -> "Entry":
        payload = fields[b"e"]
        cursor = parse_entry_id(entry_id)
        text = orjson.loads(payload).get("text", "") if cursor[1] != FINAL_SEQ else ""
        return cls(cursor, payload, text)


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

    def finish(self, final_event: dict[str, Any]) -> None:
        self.final_event = final_event

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
            event = {"type": "delta", "message": self.message_id, "cursor": f"{self.offset}-0", "text": text}
            new.append(Entry((self.offset, 0), orjson.dumps(event), text))
        if self.final_event is not None and not self.finished:
            self.final_event["cursor"] = f"{self.offset}-{FINAL_SEQ}"
            new.append(Entry((self.offset, FINAL_SEQ), orjson.dumps(self.final_event)))
            self.finished = True
        self.entries.extend(new)
        self.unsent.extend(new)
        return new

    def wake_readers(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()


class RemoteFeeds:
    """One blocking XREAD loop per process, serving readers of generations that run elsewhere."""

    def __init__(self, hub: "Hub") -> None:
        self.hub = hub
        self.subscribers: dict[str, set[asyncio.Queue[Entry]]] = {}
        self.positions: dict[str, str] = {}
        self.wake_key = f"{settings.PARLEY_KEY_PREFIX}:reader:{hub.generator_id}:wake"
        self.task: asyncio.Task[None] | None = None
        self.client = async_client(max_connections=4)

    async def subscribe(self, message_id: int, cursor: Cursor) -> asyncio.Queue[Entry]:
        key = events_key(message_id)
        queue: asyncio.Queue[Entry] = asyncio.Queue()
        if key not in self.subscribers:
            self.subscribers[key] = set()
            # A feed that is ahead of a later reader is fine: that reader's own XRANGE covers the gap.
            self.positions[key] = f"{cursor[0]}-{cursor[1]}"
        self.subscribers[key].add(queue)
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._loop(), name="parley-remote-feeds", context=contextvars.Context())
        else:
            await self.hub.redis.xadd(self.wake_key, {"w": "1"}, maxlen=10)
        return queue

    def unsubscribe(self, message_id: int, queue: asyncio.Queue[Entry]) -> None:
        key = events_key(message_id)
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
                response = await self.client.xread(streams, block=1000, count=500)
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


# How long a finished reply's log stays in memory. Its entries are most of what the process
# holds under load, and every full garbage collection walks them (docs/benchmarks.md).
FINISHED_LOG_SECONDS = 5.0


class Hub:
    def __init__(self) -> None:
        self.generator_id = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.redis = async_client(max_connections=1000)
        self.logs: dict[int, LocalLog] = {}
        self.generations: set[asyncio.Task[None]] = set()
        self.active = 0
        self.remote = RemoteFeeds(self)
        self.users = UserFeeds(self.redis)
        self.flush_task: asyncio.Task[None] | None = None
        self.work = asyncio.Event()
        self.soon = asyncio.Event()  # set when a log got its first text: flush without waiting out the window
        self.flush_waiters: list[asyncio.Future[None]] = []
        self.last_heartbeat = 0.0

    # Writing -------------------------------------------------------------------------------------

    def reserve(self, limit: int) -> bool:
        """Admission control: take a generation slot, or refuse when the process is full."""
        if self.active >= limit:
            return False
        self.active += 1
        return True

    def release(self) -> None:
        self.active -= 1
        self.work.set()

    def open_log(self, message_id: int) -> LocalLog:
        """Start the log of a generation whose slot was reserved; `close_log` frees the slot."""
        log = LocalLog(message_id, on_first_text=self.soon.set)
        self.logs[message_id] = log
        self._ensure_flusher()
        return log

    def close_log(self, log: LocalLog) -> None:
        """Called once the final event is queued (and the reply stored); the log stays readable for
        readers already following it, then the database answers."""
        self.release()
        asyncio.get_running_loop().call_later(FINISHED_LOG_SECONDS, self._forget, log)

    def _forget(self, log: LocalLog) -> None:
        if log.pending or log.unsent:  # Redis has not taken every entry yet (it may be down): not before it has
            asyncio.get_running_loop().call_later(FINISHED_LOG_SECONDS, self._forget, log)
            return
        if self.logs.get(log.message_id) is log:
            del self.logs[log.message_id]

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
        load = min(1.0, self.active / 200) ** 2
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
        return self.active > 0 or bool(self.flush_waiters) or any(
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
                pipe.xadd(key, {"e": entry.payload}, id=f"{entry.id[0]}-{entry.id[1]}")
            ttl = settings.PARLEY_STREAM_TTL if log.finished else max(settings.PARLEY_STREAM_TTL, 86_400)
            if log.finished or len(log.entries) == len(log.unsent):
                pipe.expire(key, ttl)
            touched.append(log)
        watched = [log for log in self.logs.values() if not log.finished and not log.stop_requested]
        flags_at = len(pipe)
        if watched:
            pipe.mget([stop_key(log.message_id) for log in watched])
        now = time.monotonic()
        if self.active and now - self.last_heartbeat >= settings.PARLEY_HEARTBEAT_SECONDS:
            pipe.set(heartbeat_key(self.generator_id), "1", ex=settings.PARLEY_HEARTBEAT_TTL)
            self.last_heartbeat = now
        if not len(pipe):
            return
        results = await pipe.execute(raise_on_error=False)
        for result in results:
            if isinstance(result, Exception) and not _is_duplicate_id(result):
                logger.error("Redis refused a reply event: %s", result)
        if watched:
            flags = results[flags_at]
            for log, flag in zip(watched, flags or [], strict=False):
                if flag is not None:
                    log.request_stop()
        for log in touched:
            log.unsent.clear()
            log.wake_readers()

    async def interrupt_all(self, grace: float) -> int:
        """The process is stopping: end every running reply now as `interrupted`, text kept, and hand
        its final event to Redis, so that readers elsewhere finish at once instead of when the
        reaper notices the missing heartbeat. Returns how many replies were running."""
        running = list(self.generations)
        for task in running:
            task.cancel()  # a generation cancelled from outside finalizes as interrupted
        if running:
            await asyncio.wait(running, timeout=grace)
        try:
            await self.flush()
        except (aioredis.ConnectionError, aioredis.TimeoutError):
            logger.warning("Redis unreachable at shutdown; the reaper will end the remaining replies")
        return len(running)

    # Stop ----------------------------------------------------------------------------------------

    async def request_stop(self, message_id: int) -> None:
        """Stop a generation wherever it runs: locally at once, elsewhere at that process's next flush."""
        log = self.logs.get(message_id)
        if log is not None and not log.finished:
            log.request_stop()
        await self.redis.set(stop_key(message_id), "1", ex=3600)

    # Reading -------------------------------------------------------------------------------------

    async def follow(self, message_id: int, cursor: Cursor) -> AsyncIterator[list[Entry]]:
        """Yield batches of entries after `cursor` until the final entry (which is always yielded)."""
        log = self.logs.get(message_id)
        if log is not None:
            async for batch in _follow_local(log, cursor):
                yield batch
            return
        async for batch in self._follow_remote(message_id, cursor):
            yield batch

    async def _follow_remote(self, message_id: int, cursor: Cursor) -> AsyncIterator[list[Entry]]:
        queue = await self.remote.subscribe(message_id, cursor)
        try:
            raw = await self.redis.xrange(events_key(message_id), min=f"({cursor[0]}-{cursor[1]}" if cursor != (0, 0) else "-")
            batch = _visible([Entry.from_redis(entry_id, fields) for entry_id, fields in raw], cursor)
            while True:
                if batch:
                    yield batch
                    cursor = batch[-1].id
                    if batch[-1].is_final:
                        return
                entry = await queue.get()
                pending = [entry]
                while not queue.empty():
                    pending.append(queue.get_nowait())
                batch = _visible(pending, cursor)
        finally:
            self.remote.unsubscribe(message_id, queue)

    async def read_all(self, message_id: int) -> list[Entry]:
        raw = await self.redis.xrange(events_key(message_id))
        return [Entry.from_redis(entry_id, fields) for entry_id, fields in raw]


async def _follow_local(log: LocalLog, cursor: Cursor) -> AsyncIterator[list[Entry]]:
    index = 0
    while True:
        changed = log.changed
        entries = log.entries
        batch = _visible(entries[index:], cursor)
        index = len(entries)
        if batch:
            yield batch
            cursor = batch[-1].id
            if batch[-1].is_final:
                return
        await changed.wait()


def _visible(entries: list[Entry], cursor: Cursor) -> list[Entry]:
    visible = []
    for entry in entries:
        seen = entry.after(cursor)
        if seen is not None:
            visible.append(seen)
            cursor = seen.id
    return visible


def _is_duplicate_id(error: Exception) -> bool:
    return "equal or smaller than the target stream top item" in str(error)


_hubs: dict[int, Hub] = {}


def running_hub() -> Hub | None:
    """The hub of the running event loop if one was made (nothing ran here otherwise)."""
    hub = _hubs.get(id(asyncio.get_running_loop()))
    return hub if hub is not None and getattr(hub, "_loop", None) is asyncio.get_running_loop() else None


def get_hub() -> Hub:
    """The hub of the running event loop (tests run many loops; daphne runs one)."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(id(loop))
    if hub is None or getattr(hub, "_loop", None) is not loop:
        hub = Hub()
        hub._loop = loop  # type: ignore[attr-defined]
        _hubs.clear()
        _hubs[id(loop)] = hub
    return hub
