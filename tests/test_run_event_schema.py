"""Agent runs' event types: each one's wire shape, its cursor, and that a run's log is written by
sync code and read back through the same read API as a reply's."""

import re
from typing import Any

import orjson
import pytest

from streaming import events
from streaming.entries import Entry, merged, visible
from streaming.writer import SyncWriter

CURSOR = re.compile(r"^[0-9]+-[01]$")
COMMON = {"type": str, "run": int, "cursor": str}
SHAPES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    # type: (fields given, their types)
    "run_started": ({"goal": "Find flights", "model": "demo"}, {"goal": str, "model": str}),
    "step_started": ({"step": 1, "kind": "tool", "title": "Searching the web"}, {"step": int, "kind": str, "title": str}),
    "step_delta": ({"step": 2, "text": "Thinking"}, {"step": int, "text": str}),
    "tool_call": (
        {"step": 1, "call_id": "c1", "tool": "search", "arguments": {"query": "flights"}},
        {"step": int, "call_id": str, "tool": str, "arguments": dict},
    ),
    "tool_result": (
        {"step": 1, "call_id": "c1", "ok": True, "result": {"hits": 3}, "error": None},
        {"step": int, "call_id": str, "ok": bool, "result": object, "error": (str, type(None))},
    ),
    "approval_requested": (
        {"step": 3, "tool": "send_email", "arguments": {"to": "a@example.com"}, "reason": "Sends an e-mail"},
        {"step": int, "tool": str, "arguments": dict, "reason": str},
    ),
    "approval_decided": ({"step": 3, "decision": "approve", "note": ""}, {"step": int, "decision": str, "note": str}),
    "step_finished": (
        {"step": 1, "status": "succeeded", "tokens": 120, "cost_usd": "0.000120"},
        {"step": int, "status": str, "tokens": int, "cost_usd": str},
    ),
    "progress": ({"percent": 40, "current": "Writing the report"}, {"percent": int, "current": str}),
    "run_finished": (
        {"status": "succeeded", "result": "Done.", "error_code": None, "error_text": None, "tokens": 900, "cost_usd": "0.01"},
        {"status": str, "result": str, "error_code": (str, type(None)), "error_text": (str, type(None)), "tokens": int,
         "cost_usd": str},
    ),
}


def test_every_run_event_type_has_a_shape_here():
    assert set(SHAPES) == set(events.RUN_EVENT_TYPES)


@pytest.mark.parametrize("event_type", sorted(SHAPES))
def test_run_event_has_its_wire_shape(event_type):
    given, types = SHAPES[event_type]
    event = orjson.loads(orjson.dumps(events.run_event(event_type, 7, 4, **given)))  # as a client gets it
    assert set(event) == set(COMMON) | set(types)
    for name, kind in {**COMMON, **types}.items():
        assert isinstance(event[name], kind) and not (kind is int and isinstance(event[name], bool)), (name, event[name])
    assert event["type"] == event_type and event["run"] == 7 and CURSOR.match(event["cursor"])
    assert event["cursor"] == ("4-1" if event_type == "run_finished" else "4-0")


def test_a_run_event_with_a_missing_or_unknown_field_is_refused():
    with pytest.raises(TypeError):
        events.run_event("progress", 1, 1, percent=10)
    with pytest.raises(TypeError):
        events.run_event("progress", 1, 1, percent=10, current="x", extra=1)


def test_run_events_are_discrete_entries_that_resume_from_a_cursor():
    log = [
        Entry.of(events.run_event("run_started", 3, 1, goal="g", model="demo")),
        Entry.of(events.run_event("step_delta", 3, 2, step=1, text="Hel")),
        Entry.of(events.run_event("step_delta", 3, 3, step=1, text="lo")),
        Entry.of(events.run_event("run_finished", 3, 4, status="succeeded", result="Hello", error_code=None,
                                  error_text=None, tokens=5, cost_usd="0")),
    ]
    # Step text is not a reply's text: it is neither trimmed by offset nor merged.
    assert [entry.kind for entry in merged(visible(log, (1, 0)))] == ["step_delta", "step_delta", "run_finished"]
    assert [entry.cursor for entry in visible(log, (3, 0))] == ["4-1"]


@pytest.mark.django_db
def test_sync_and_async_writers_store_identical_entries():
    """The reaper and Celery workers write with SyncWriter, web processes with the EventLog flush;
    readers must not be able to tell them apart."""
    import asyncio

    from streaming.eventlog import EventLog

    async def written_async() -> list[Entry]:
        log = EventLog()
        await log.clear(9001)
        local = log.open_log(9001)
        local.append("Hello, ")
        await log.flush()
        local.append("world")
        local.finish(events.done(9001, 0, "complete", 3, 2, "stop", "v1", 10, 20))
        await log.flush()
        log.close_log(local)
        entries = await log.read_all(9001)
        return entries

    from_web = asyncio.run(written_async())
    writer = SyncWriter()
    writer.client.delete(writer_key(9002))
    writer.append(9002, [events.delta(9002, 7, "Hello, "), events.delta(9002, 12, "world")])
    writer.append(9002, [events.done(9002, 12, "complete", 3, 2, "stop", "v1", 10, 20)])
    from_sync = writer.read_all(9002)
    as_9001 = [entry.payload.replace(b"9002", b"9001") for entry in from_sync]
    assert [entry.payload for entry in from_web] == as_9001
    assert [(entry.id, entry.kind, entry.text) for entry in from_web] == [(entry.id, entry.kind, entry.text) for entry in from_sync]
    assert writer.client.ttl(writer_key(9002)) > 0 and writer.client.ttl(writer_key(9001)) > 0
    writer.client.delete(writer_key(9001), writer_key(9002))


def writer_key(message_id: int) -> str:
    from streaming.keys import events_key

    return events_key(message_id)


@pytest.mark.django_db
def test_a_workers_run_events_are_read_back_in_order_and_a_rewritten_step_is_not_repeated():
    writer = SyncWriter()
    writer.client.delete(run_key(77))
    started = events.run_event("run_started", 77, 1, goal="g", model="parley-demo")
    step = events.run_event("step_started", 77, 2, step=1, kind="tool", title="Calculating")
    writer.append_run(77, [started, step])
    writer.append_run(77, [step])  # a redelivered task writes its step again
    finished = events.run_event("run_finished", 77, 3, status="succeeded", result="42", error_code=None, error_text=None,
                                tokens=9, cost_usd="0")
    writer.append_run(77, [finished])
    logged = writer.read_run(77)
    assert [(entry.kind, entry.cursor, entry.message) for entry in logged] == [
        ("run_started", "1-0", 77), ("step_started", "2-0", 77), ("run_finished", "3-1", 77)]
    assert 0 < writer.client.ttl(run_key(77)) and writer.client.exists(writer_key(77)) == 0  # a run's log, not a reply's
    writer.client.delete(run_key(77))


def run_key(run_id: int) -> str:
    from streaming.keys import run_events_key

    return run_events_key(run_id)
