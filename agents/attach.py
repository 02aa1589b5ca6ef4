"""Following a run's log from a cursor: the read API of the run doors (WebSocket and SSE).

A run's log is written by Celery workers, so every web process follows it from Redis. Who may
follow it is read from Redis too (its owner key, set at its start) while its log lasts; after that,
and for runs whose key was never set, from the database, which also rebuilds an ended run's final
event for the page to fetch the run's state once more.
"""

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from channels.db import database_sync_to_async

from accounts.models import User
from agents.actions import get_run_for
from agents.models import AgentRun
from chat.actions import ActionError, parse_pk
from streaming import events, process
from streaming.entries import Entry, visible
from streaming.keys import run_owner_key


@dataclass(frozen=True, slots=True)
class _StoredRun:
    id: int
    active: bool
    final_event: dict[str, Any]


async def attach_run(user: User, run_id: object, after: object, idle: float | None = None) -> AsyncIterator[list[Entry]]:
    """Authorize, then yield batches of the run's entries after the cursor, ending with its final
    one. With `idle`, an empty batch after that many seconds without news (a keep-alive cue)."""
    cursor = events.parse_cursor(after)
    if cursor is None:
        raise ActionError("invalid_input", "after must be a cursor such as \"12-0\".")
    event_log = process.event_log()
    owner = await event_log.redis.get(run_owner_key(parse_pk(run_id)))
    if owner is not None:
        # Known in Redis while its log lasts: no database hop, which would wait behind every other
        # request on the database thread (a burst of starts held attaches back by a second).
        if int(owner) != user.pk:
            raise ActionError("not_found")
        async for batch in event_log.follow_run(parse_pk(run_id), cursor, idle):
            yield batch
        return
    stored = await _load_run(user, run_id)
    if stored.active:
        async for batch in event_log.follow_run(stored.id, cursor, idle):
            yield batch
        return
    logged = await event_log.read_run(stored.id)
    if logged and logged[-1].is_final:
        yield visible(logged, cursor)
        return
    yield [Entry.of(stored.final_event)]


@database_sync_to_async
def _load_run(user: User, run_id: object) -> _StoredRun:
    run = get_run_for(user, run_id)
    return _StoredRun(run.pk, run.is_active, final_event_of(run))


def final_event_of(run: AgentRun) -> dict[str, Any]:
    """The final event of an ended run, rebuilt from the database."""
    return events.run_event(
        "run_finished", run.pk, run.event_seq, status=run.status, result=run.result, error_code=run.error_code or None,
        error_text=run.error_text or None, tokens=run.tokens, cost_usd=str(run.cost_usd),
    )
