"""What one web process (one event loop) holds for streaming, made on first use.

Tests run many event loops in one process; daphne runs one. Each loop gets its own event log,
generation slots and notice feeds, sharing one Redis connection pool.
"""

import asyncio
from dataclasses import dataclass

from streaming.eventlog import EventLog
from streaming.feeds import UserFeeds
from streaming.slots import Slots


@dataclass(eq=False)
class Process:
    loop: asyncio.AbstractEventLoop
    event_log: EventLog
    slots: Slots
    feeds: UserFeeds


_current: Process | None = None


def current() -> Process:
    """This event loop's streaming state, made on first use."""
    global _current
    loop = asyncio.get_running_loop()
    if _current is None or _current.loop is not loop:
        event_log = EventLog()
        _current = Process(loop, event_log, Slots(), UserFeeds(event_log.redis))
    return _current


def running() -> Process | None:
    """This event loop's streaming state if anything made it (nothing streamed here otherwise)."""
    return _current if _current is not None and _current.loop is asyncio.get_running_loop() else None


def event_log() -> EventLog:
    return current().event_log
