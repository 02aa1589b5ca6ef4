"""attach_run on the WebSocket, in this process: a finished run is served from its log and, once
the log has expired, from the database; foreign and malformed run ids are refused."""

import pytest
import redis
from channels.db import database_sync_to_async
from django.conf import settings

from agents import actions, runner
from chat.actions import create_conversation
from parley.redis_clients import sync_client_for
from streaming.keys import run_events_key, run_owner_key
from tests.helpers import connect

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def no_broker(monkeypatch):
    monkeypatch.setattr(actions, "enqueue_run", lambda run_id: None)


@database_sync_to_async
def finished_run(user):
    run = actions.start_run(user, create_conversation(user).pk, "Compute 4 * 5")
    runner.execute(run.pk)
    run.refresh_from_db()
    return run


async def attach(user, frame: dict) -> list[dict]:
    communicator = await connect(user)
    assert (await communicator.connect())[0]
    await communicator.send_json_to(frame)
    received = []
    while True:
        event = await communicator.receive_json_from(timeout=10)
        if event["type"] == "run":
            continue
        received.append(event)
        if event["type"] in {"run_finished", "error"}:
            await communicator.disconnect()
            return received


async def test_a_finished_run_is_served_from_its_log_then_from_the_database(alice):
    run = await finished_run(alice)
    assert run.status == "succeeded"
    whole = await attach(alice, {"type": "attach_run", "run": run.pk, "after": "0-0"})
    assert whole[0]["type"] == "run_started" and whole[-1]["cursor"] == run.final_cursor
    tail = await attach(alice, {"type": "attach_run", "run": run.pk, "after": whole[-3]["cursor"]})
    assert tail == whole[-2:]

    # The owner key goes a minute before the log; then both are gone.
    assert 0 < redis_client().ttl(run_owner_key(run.pk)) < redis_client().ttl(run_events_key(run.pk))
    redis_client().delete(run_events_key(run.pk), run_owner_key(run.pk))
    rebuilt = await attach(alice, {"type": "attach_run", "run": run.pk, "after": whole[-3]["cursor"]})
    assert rebuilt == [whole[-1]]  # the same final event, cursor and all


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ({"type": "attach_run", "run": "1"}, "invalid_input"),
        ({"type": "attach_run", "run": True}, "invalid_input"),
        ({"type": "attach_run", "run": -4}, "invalid_input"),
        ({"type": "attach_run", "run": [1]}, "invalid_frame"),
        ({"type": "attach_run", "run": 1, "after": "later"}, "invalid_input"),
        ({"type": "attach_run", "run": 99999999}, "not_found"),
    ],
)
async def test_bad_attach_run_frames_are_refused(alice, frame, code):
    received = await attach(alice, frame)
    assert received[-1]["type"] == "error" and received[-1]["code"] == code


async def test_another_users_run_cannot_be_attached(alice, bob):
    run = await finished_run(alice)
    received = await attach(bob, {"type": "attach_run", "run": run.pk, "after": "0-0"})
    assert [(e["type"], e["code"]) for e in received] == [("error", "not_found")]
    redis_client().delete(run_owner_key(run.pk))  # asked of the database instead
    received = await attach(bob, {"type": "attach_run", "run": run.pk, "after": "0-0"})
    assert [(e["type"], e["code"]) for e in received] == [("error", "not_found")]


def redis_client() -> redis.Redis:
    return sync_client_for(settings.REDIS_URL)


async def test_a_start_that_lands_after_the_run_ended_keeps_the_short_owner_key(alice):
    """The owner key written at a run's end goes before its log; the start's own write, if it comes
    later, must not make it outlive the log (an attach would then wait for a log that is gone)."""
    from streaming.writer import SyncWriter

    run = await finished_run(alice)
    short = redis_client().ttl(run_owner_key(run.pk))
    await database_sync_to_async(SyncWriter().set_run_owner)(run.pk, alice.pk)
    assert 0 < redis_client().ttl(run_owner_key(run.pk)) <= short < redis_client().ttl(run_events_key(run.pk))
