"""Two daphne processes, A and B, and two Celery workers on one Redis and one database: a reply
started through A followed to its end through B, Stop sent to B, agent progress on both, limits
across both, and A killed mid-reply."""

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import redis
from django.conf import settings

from accounts.models import ApiToken
from billing.models import UsageRecord
from chat.models import Message
from tests.live import LiveApp, child_env
from tests.test_agent_runs_live import assert_in_order_once, sse_run_events
from tests.test_agent_runs_live import start as start_run
from tests.test_limits import set_free
from tests.test_live_streaming import send, ws_connect

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

# How long a Stop sent to one process may take to end the generation running in the other.
STOP_BOUND_SECONDS = 3.0
# The issue's bound for a killed process's replies to be `interrupted`.
INTERRUPTED_WITHIN_SECONDS = 30.0


@pytest.fixture(scope="module")
def pair(django_db_setup, django_db_blocker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApp]:
    """A and B (servers[0], servers[1]) and two workers with beat, on their own queue."""
    with django_db_blocker.unblock():
        # As the session's live app: a fast heartbeat, the reaper at its old pace (tests/conftest.py).
        env = child_env(PARLEY_HEARTBEAT_SECONDS="1", PARLEY_HEARTBEAT_TTL="3", PARLEY_REAP_SECONDS="15",
                        PARLEY_CELERY_QUEUE=f"scale-{uuid.uuid4().hex[:8]}")
    app = LiveApp(tmp_path_factory.mktemp("scale"), env)
    try:
        app.start_daphne()
        app.start_daphne()
        app.start_worker("first")
        app.start_worker("second")
        yield app
    finally:
        app.stop()


@pytest.fixture
def token(alice) -> str:
    return ApiToken.issue(alice, "scale")[1]


def cursor_offset(cursor: str) -> int:
    return int(cursor.partition("-")[0])


def assert_contiguous(events: list[dict], start: int = 0) -> None:
    """Every delta begins where the one before ended (none missing, none repeated); the final
    event's cursor is the end of the text."""
    offset = start
    for event in events:
        if event["type"] == "delta":
            assert cursor_offset(event["cursor"]) - len(event["text"]) == offset, (offset, event)
            offset = cursor_offset(event["cursor"])
        else:
            assert cursor_offset(event["cursor"]) == offset, (offset, event)


def sse_reply(base_url: str, token: str, reply_id: int, last_id: str | None = None, stop_after: int | None = None) -> list[dict]:
    """A reply's events over SSE (each event's data, checked against its SSE id), until its final
    event or `stop_after` deltas, when the connection is dropped."""
    headers = {"Authorization": f"Bearer {token}", **({"Last-Event-ID": last_id} if last_id else {})}
    received, current = [], {}
    with httpx.stream("GET", f"{base_url}/api/messages/{reply_id}/events", headers=headers, timeout=30) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if line == "" and "data" in current:
                event = json.loads(current["data"])
                assert event["type"] == current["event"] and event["cursor"] == current["id"]
                received.append(event)
                current = {}
                if event["type"] in {"done", "error"} or (stop_after and len(received) >= stop_after):
                    break
            elif line and not line.startswith(":"):
                field, _, value = line.partition(": ")
                current[field] = value
    return received


async def ws_reply(base_url: str, token: str, reply_id: int, after: str = "") -> list[dict]:
    """A reply's events over the WebSocket, attached at `after`, until its final event."""
    ws = await ws_connect(base_url, token)
    try:
        await ws.send(json.dumps({"type": "attach", "message": reply_id, "after": after}))
        received = []
        while True:
            event = json.loads(await asyncio.wait_for(ws.recv(), 40))
            if event.get("message") != reply_id or event["type"] not in {"delta", "done", "error"}:
                continue
            received.append(event)
            if event["type"] in {"done", "error"}:
                return received
    finally:
        await ws.close()


def text_of(events: list[dict]) -> str:
    return "".join(event["text"] for event in events if event["type"] == "delta")


def test_killing_a_mid_reply_leaves_its_replies_interrupted_and_b_s_client_sees_the_end(live_factory, token):
    # First in the module, so that `pair` is not yet running beside it. A's heartbeat lapses on the
    # defaults' TTL; whichever worker's beat comes next ends its replies.
    app = live_factory(PARLEY_CELERY_QUEUE=f"scale-kill-{uuid.uuid4().hex[:8]}")
    for name in ("PARLEY_HEARTBEAT_SECONDS", "PARLEY_HEARTBEAT_TTL", "PARLEY_REAP_SECONDS"):
        app.env.pop(name, None)  # the defaults a deployment gets
    a, b = app.start_daphne(), app.start_daphne()
    app.start_worker("first")
    app.start_worker("second")
    replies = [send(a.url, token, f"doomed {n} /words 5000 /slow 20")["assistant_message"]["id"] for n in range(2)]

    async def scenario() -> tuple[list[list[dict]], float]:
        followers = [asyncio.create_task(ws_reply(b.url, token, reply_id)) for reply_id in replies]
        await asyncio.sleep(2)  # both replies under way in A
        assert not any(task.done() for task in followers)
        await asyncio.to_thread(a.kill)  # SIGKILL: no cleanup runs in A
        died = time.monotonic()
        received = await asyncio.gather(*followers)
        return received, time.monotonic() - died

    received, waited = asyncio.run(scenario())
    assert waited < INTERRUPTED_WITHIN_SECONDS, f"B's clients saw the end {waited:.1f} s after A died"
    for reply_id, events in zip(replies, received, strict=True):
        assert events[-1]["type"] == "done" and events[-1]["status"] == "interrupted"
        assert_contiguous(events)
        stored = Message.objects.get(pk=reply_id)
        assert stored.status == "interrupted"
        assert stored.content == text_of(events) and len(stored.content.split()) > 5


def test_a_reply_started_through_a_is_followed_to_its_end_through_b(pair, token):
    a, b = pair.servers
    reply_id = send(a.url, token, "scale out /words 800 /slow 5")["assistant_message"]["id"]

    async def both() -> tuple[list[dict], list[dict]]:
        # B's WebSocket from the start, and B's SSE dropped mid-reply and resumed at its last cursor.
        def sse() -> list[dict]:
            first = sse_reply(b.url, token, reply_id, stop_after=5)
            assert first[-1]["type"] == "delta"  # the connection dropped mid-reply
            return first + sse_reply(b.url, token, reply_id, last_id=first[-1]["cursor"])

        ws_task = asyncio.create_task(ws_reply(b.url, token, reply_id))
        return await asyncio.to_thread(sse), await ws_task

    over_sse, over_ws = asyncio.run(both())
    stored = Message.objects.get(pk=reply_id)
    assert stored.status == "complete" and len(stored.content.split()) == 800
    for received in (over_sse, over_ws):
        assert received[-1]["type"] == "done" and received[-1]["status"] == "complete"
        assert_contiguous(received)
        assert text_of(received) == stored.content
    assert UsageRecord.objects.filter(message_id=reply_id).count() == 1


@pytest.mark.parametrize("door", ["http", "websocket"])
def test_stop_sent_to_b_stops_the_generation_running_in_a(pair, token, door):
    a, b = pair.servers
    reply_id = send(a.url, token, "stop me /words 5000 /slow 10")["assistant_message"]["id"]

    async def scenario() -> tuple[list[dict], float]:
        follower = await ws_connect(b.url, token)
        await follower.send(json.dumps({"type": "attach", "message": reply_id, "after": ""}))
        received: list[dict] = []
        while len(text_of(received).split()) < 20:
            event = json.loads(await asyncio.wait_for(follower.recv(), 10))
            if event.get("message") == reply_id and event["type"] == "delta":
                received.append(event)
        asked = time.monotonic()
        if door == "http":
            response = await asyncio.to_thread(
                httpx.post, f"{b.url}/api/messages/{reply_id}/stop", headers={"Authorization": f"Bearer {token}"}
            )
            assert response.status_code == 202, response.text
        else:
            stopper = await ws_connect(b.url, token)
            await stopper.send(json.dumps({"type": "stop", "message": reply_id}))
        while True:
            event = json.loads(await asyncio.wait_for(follower.recv(), 10))
            if event.get("message") != reply_id or event["type"] not in {"delta", "done", "error"}:
                continue
            received.append(event)
            if event["type"] != "delta":
                break
        took = time.monotonic() - asked
        await follower.close()
        if door == "websocket":
            await stopper.close()
        return received, took

    received, took = asyncio.run(scenario())
    assert received[-1]["type"] == "done" and received[-1]["status"] == "stopped"
    assert took < STOP_BOUND_SECONDS, f"the generation in A ended {took:.1f} s after the Stop sent to B"
    assert_contiguous(received)
    stored = Message.objects.get(pk=reply_id)
    assert stored.status == "stopped"
    assert stored.content == text_of(received)  # the partial text is kept, all of it
    assert 20 <= len(stored.content.split()) < 5000


def test_an_agent_run_s_progress_reaches_clients_on_both_processes_alike(pair, token):
    a, b = pair.servers
    run = start_run(a.url, token, goal="Compute 6 * 7 about parley /slow 30")

    async def on_a() -> list[dict]:
        ws = await ws_connect(a.url, token)
        try:
            await ws.send(json.dumps({"type": "attach_run", "run": run["id"], "after": "0-0"}))
            out: list[dict] = []
            while not out or out[-1]["type"] != "run_finished":
                event = json.loads(await asyncio.wait_for(ws.recv(), 30))
                if event.get("run") == run["id"] and event["type"] != "run":  # not the user's run notices
                    out.append(event)
            return out
        finally:
            await ws.close()

    async def both() -> tuple[list[dict], list[dict]]:
        return await asyncio.gather(on_a(), asyncio.to_thread(sse_run_events, b.url, token, run["id"]))

    through_a, through_b = asyncio.run(both())
    assert_in_order_once(through_a)
    assert through_a == through_b
    assert through_a[-1]["status"] == "succeeded"
    assert any(event["type"] == "progress" for event in through_a)


def test_limits_hold_exactly_across_both_processes(pair, token, alice):
    set_free(requests_per_minute=6, concurrent_replies=None, tokens_per_day=None)
    servers = pair.servers
    headers = {"Authorization": f"Bearer {token}"}
    conversations = [httpx.post(f"{servers[0].url}/api/conversations/", json={}, headers=headers).json()["id"] for _ in range(24)]

    def post(index: int, content: str) -> int:
        url = f"{servers[index % 2].url}/api/conversations/{conversations[index]}/messages"
        return httpx.post(url, json={"content": content}, headers=headers, timeout=30).status_code

    # Requests are counted per calendar minute: a burst across a minute's end meets two counters.
    if time.time() % 60 > 45:
        time.sleep(60.5 - time.time() % 60)
    with ThreadPoolExecutor(24) as pool:
        statuses = list(pool.map(lambda index: post(index, "burst /words 1"), range(24)))
    assert statuses.count(201) == 6 and statuses.count(429) == 18, statuses
    wait_for_replies_to_end(alice)

    # A token budget: each reply reserves its prompt and its whole output limit before the call,
    # so concurrent sends over both processes never spend more than the budget.
    UsageRecord.objects.all().delete()
    quota = redis.Redis.from_url(settings.REDIS_URL)
    for key in quota.scan_iter(f"{settings.PARLEY_KEY_PREFIX}:quota:{alice.pk}:*"):
        quota.delete(key)
    set_free(requests_per_minute=None, tokens_per_day=600, max_output_tokens=100)
    with ThreadPoolExecutor(24) as pool:
        statuses = list(pool.map(lambda index: post(index, f"spend {index} /words 300"), range(24)))
    admitted = statuses.count(201)
    assert 1 <= admitted < 24 and statuses.count(429) == 24 - admitted, statuses
    wait_for_replies_to_end(alice)
    quota.close()
    rows = UsageRecord.objects.filter(user=alice)
    assert rows.count() == admitted
    spent = sum(row.total_tokens for row in rows)
    # Reservations are made from an estimate of the prompt: at worst one reply's worth over.
    assert spent <= 600 + 100, f"{admitted} replies spent {spent} tokens of a 600-token budget"
    assert all(row.completion_tokens <= 100 for row in rows)


def wait_for_replies_to_end(user) -> None:  # type: ignore[no-untyped-def]
    """Each reply's ledger row is written as it ends."""
    replies = Message.objects.filter(role="assistant", conversation__owner=user)
    deadline = time.monotonic() + 30
    while replies.filter(status__in=Message.ACTIVE).exists():
        assert time.monotonic() < deadline, "replies still running after 30 s"
        time.sleep(0.1)
