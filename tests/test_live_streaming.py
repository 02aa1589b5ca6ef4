"""Real daphne processes over HTTP and WebSocket: SSE resume, cross-process attach and stop, crashes."""

import asyncio
import json
import time

import httpx
import pytest
import websockets
from django.conf import settings

from accounts.models import ApiToken
from billing import quotas
from billing.models import UsageRecord
from chat.models import Message
from chat.reaper import reap_interrupted
from parley.redis_clients import sync_client_for

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]


def sse_events(response: httpx.Response) -> list[dict]:
    parsed, current = [], {}
    for line in response.iter_lines():
        if line == "":
            if "event" in current or "comments" in current:
                parsed.append(current)
                if current.get("event") in {"done", "error"}:
                    break
            current = {}
        elif line.startswith(":"):
            current.setdefault("comments", []).append(line)
        else:
            field, _, value = line.partition(": ")
            current[field] = value
    return parsed


def send(base_url: str, token: str, content: str, conversation: int | None = None) -> dict:
    headers = {"Authorization": f"Bearer {token}"}
    if conversation is None:
        conversation = httpx.post(f"{base_url}/api/conversations/", json={}, headers=headers).json()["id"]
    response = httpx.post(f"{base_url}/api/conversations/{conversation}/messages", json={"content": content}, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


@pytest.fixture
def token(alice) -> str:
    return ApiToken.issue(alice, "live")[1]


def test_sse_streams_a_reply_and_resumes_with_last_event_id(live_app, token):
    created = send(live_app.url, token, "sse please /words 300 /slow 5")
    reply_id = created["assistant_message"]["id"]
    headers = {"Authorization": f"Bearer {token}"}
    url = f"{live_app.url}/api/messages/{reply_id}/events"
    received, last_id = [], None
    with httpx.stream("GET", url, headers=headers, timeout=30) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-accel-buffering"] == "no"
        assert "no-cache" in response.headers["cache-control"]
        for line in response.iter_lines():
            if line.startswith("id: "):
                last_id = line[4:]
            if line.startswith("data: "):
                received.append(json.loads(line[6:]))
            if len(received) >= 3:
                break  # drop the connection mid-reply
    assert all(event["type"] == "delta" for event in received)
    with httpx.stream("GET", url, headers={**headers, "Last-Event-ID": last_id}, timeout=30) as response:
        rest = sse_events(response)
    assert rest[-1]["event"] == "done"
    text = "".join(e["text"] for e in received) + "".join(json.loads(e["data"])["text"] for e in rest if e.get("event") == "delta")
    stored = Message.objects.get(pk=reply_id)
    assert stored.status == "complete"
    assert text == stored.content
    assert len(text.split()) == 300
    with httpx.stream("GET", f"{url}?after=0", headers=headers, timeout=30) as response:
        replay = sse_events(response)
    assert "".join(json.loads(e["data"])["text"] for e in replay if e.get("event") == "delta") == stored.content


def test_sse_sends_keep_alive_comments(live_factory, alice):
    app = live_factory(PARLEY_SSE_KEEPALIVE_SECONDS="0.2")
    app.start_daphne()
    raw = ApiToken.issue(alice, "keepalive")[1]
    created = send(app.url, raw, "slow start /words 3 /slow 700")
    reply_id = created["assistant_message"]["id"]
    with httpx.stream("GET", f"{app.url}/api/messages/{reply_id}/events", headers={"Authorization": f"Bearer {raw}"}, timeout=30) as response:
        events = sse_events(response)
    assert any("comments" in event for event in events)
    assert events[-1]["event"] == "done"


async def ws_connect(base_url: str, token: str):
    return await websockets.connect(base_url.replace("http", "ws") + "/ws/chat/", additional_headers={"Authorization": f"Bearer {token}"})


async def ws_until_final(ws, message_id: int) -> tuple[str, dict]:
    text = []
    while True:
        event = json.loads(await asyncio.wait_for(ws.recv(), 20))
        if event.get("message") != message_id:
            continue
        if event["type"] == "delta":
            text.append(event["text"])
        elif event["type"] in {"done", "error"}:
            return "".join(text), event


def test_websocket_over_daphne_with_a_bearer_token(live_app, token):
    async def scenario():
        ws = await ws_connect(live_app.url, token)
        await ws.send(json.dumps({"type": "send", "conversation": None, "content": "hi /words 50"}))
        created = json.loads(await ws.recv())
        assert created["type"] == "message"
        text, final = await ws_until_final(ws, created["assistant_message"]["id"])
        await ws.close()
        return created, text, final

    created, text, final = asyncio.run(scenario())
    assert final["status"] == "complete"
    assert Message.objects.get(pk=created["assistant_message"]["id"]).content == text


def test_websocket_refuses_a_foreign_origin_over_daphne(live_app, token):
    async def scenario():
        url = live_app.url.replace("http", "ws") + "/ws/chat/"
        # Accepted and closed at once with the reason, so that the client can tell why.
        ws = await websockets.connect(url, origin="http://evil.example", additional_headers={"Authorization": f"Bearer {token}"})
        with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
        return closed.value.rcvd.code

    assert asyncio.run(scenario()) == 4403


def test_attach_and_stop_from_another_web_process(live_factory, alice):
    app = live_factory()
    first, second = app.start_daphne(), app.start_daphne()
    raw = ApiToken.issue(alice, "two")[1]

    async def scenario():
        created = send(first.url, raw, "cross /words 3000 /slow 10")
        reply_id = created["assistant_message"]["id"]
        follower = await ws_connect(second.url, raw)
        await follower.send(json.dumps({"type": "attach", "message": reply_id, "after": ""}))
        chunks = []
        while len("".join(chunks).split()) < 20:
            event = json.loads(await asyncio.wait_for(follower.recv(), 10))
            assert event["type"] == "delta"
            chunks.append(event["text"])
        stopper = await ws_connect(second.url, raw)
        await stopper.send(json.dumps({"type": "stop", "message": reply_id}))
        rest, final = await ws_until_final(follower, reply_id)
        await follower.close()
        await stopper.close()
        return reply_id, "".join(chunks) + rest, final

    reply_id, text, final = asyncio.run(scenario())
    assert final["status"] == "stopped"
    stored = Message.objects.get(pk=reply_id)
    assert stored.status == "stopped"
    assert stored.content == text
    assert 20 <= len(text.split()) < 3000


def test_a_killed_web_process_leaves_its_reply_interrupted_and_readable(live_factory, alice):
    app = live_factory(PARLEY_HEARTBEAT_SECONDS="1", PARLEY_HEARTBEAT_TTL="2", PARLEY_REAP_SECONDS="1")
    doomed, survivor = app.start_daphne(), app.start_daphne()
    app.start_worker()
    raw = ApiToken.issue(alice, "crash")[1]
    created = send(doomed.url, raw, "crash me /words 3000 /slow 10")
    reply_id = created["assistant_message"]["id"]
    time.sleep(1.5)
    doomed.kill()

    async def follow():
        ws = await ws_connect(survivor.url, raw)
        await ws.send(json.dumps({"type": "attach", "message": reply_id, "after": ""}))
        result = await ws_until_final(ws, reply_id)
        await ws.close()
        return result

    text, final = asyncio.run(follow())  # the Celery beat reaper ends it; no test code calls the reaper
    assert final["type"] == "done" and final["status"] == "interrupted"
    stored = Message.objects.get(pk=reply_id)
    assert stored.status == "interrupted"
    assert stored.content == text
    assert len(text.split()) > 5
    assert reap_interrupted() == []  # nothing left to reap
    # The dead process never charged the reply: the reaper did, and gave back its concurrency slot.
    entry = UsageRecord.objects.get(message_id=reply_id)
    assert (entry.outcome, entry.estimated) == ("interrupted", True) and entry.completion_tokens == (len(text) + 3) // 4
    slots = sync_client_for(settings.REDIS_URL).zcard(f"{quotas.user_base(alice.pk)}:active")
    assert slots == 0


def test_a_stopped_web_process_ends_its_replies_as_interrupted_at_once(live_factory, alice):
    # No Celery worker and a long heartbeat: only the stopping process itself can end the reply.
    app = live_factory(PARLEY_HEARTBEAT_SECONDS="30", PARLEY_HEARTBEAT_TTL="600")
    stopping, survivor = app.start_daphne(), app.start_daphne()
    raw = ApiToken.issue(alice, "restart")[1]
    created = send(stopping.url, raw, "restart me /words 3000 /slow 10")
    reply_id = created["assistant_message"]["id"]

    async def follow():
        ws = await ws_connect(survivor.url, raw)
        await ws.send(json.dumps({"type": "attach", "message": reply_id, "after": ""}))
        first = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert first["type"] == "delta"
        started = time.monotonic()
        await asyncio.to_thread(stopping.stop)  # SIGTERM, as a deploy or Ctrl-C would send
        rest, final = await ws_until_final(ws, reply_id)
        await ws.close()
        return first["text"] + rest, final, time.monotonic() - started

    text, final, took = asyncio.run(follow())
    assert final["type"] == "done" and final["status"] == "interrupted"
    assert took < 10, f"the final event came {took:.1f}s after SIGTERM"
    stored = Message.objects.get(pk=reply_id)
    assert stored.status == "interrupted"
    assert stored.content == text
    assert 0 < len(text.split()) < 3000
    assert "running replies ended as interrupted" in stopping.log_path.read_text()
