"""Malformed frames and cursors through real daphne: a clear error, the socket stays open, nothing breaks."""

import asyncio
import json

import httpx
import pytest

from accounts.models import ApiToken
from chat.models import Message
from tests.test_live_streaming import send, ws_connect, ws_until_final

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def token(alice) -> str:
    return ApiToken.issue(alice, "frames")[1]


async def next_error(ws) -> dict:
    while True:
        event = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if event["type"] == "error" and event["message"] is None:
            return event


async def still_answers(ws) -> None:
    """The socket is open and serves a good frame after the bad one."""
    await ws.send(json.dumps({"type": "send", "conversation": None, "content": "still here /words 2", "ref": "ok"}))
    while True:
        event = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if event["type"] == "message":
            break
    _, final = await ws_until_final(ws, event["assistant_message"]["id"])
    assert final["status"] == "complete"


@pytest.mark.parametrize(
    "frame",
    [
        {"type": ["send"]},
        {"type": {"a": 1}},
        {"type": 7, "message": 1},
        {"type": "send", "conversation": [1], "content": "hi"},
        {"type": "send", "conversation": None, "content": {"text": "hi"}},
        {"type": "stop", "message": {"a": 1}},
        {"type": "send", "conversation": None, "content": "hi", "ref": {"deep": [[[[1]]]]}},
        {"type": "send", "conversation": None, "content": "hi", "ref": "r" * 5000},
    ],
)
def test_a_malformed_frame_gets_invalid_frame_and_the_socket_stays_open(live_app, token, frame):
    async def scenario():
        ws = await ws_connect(live_app.url, token)
        await ws.send(json.dumps(frame))
        error = await next_error(ws)
        await still_answers(ws)
        await ws.close()
        return error

    error = asyncio.run(scenario())
    assert error["code"] == "invalid_frame"
    assert error["text"]
    assert "ref" not in error or isinstance(error["ref"], str | int)
    assert Message.objects.filter(content="hi").count() == 0  # the bad frame stored nothing


@pytest.mark.parametrize("bad_id", [lambda i: [i], lambda i: {"a": i}])
@pytest.mark.parametrize("frame_type", ["detach", "attach"])
def test_a_malformed_message_id_on_an_attached_socket_keeps_the_reply_flowing(live_app, token, frame_type, bad_id):
    created = send(live_app.url, token, "long one /words 200 /slow 20")
    reply_id = created["assistant_message"]["id"]

    async def scenario():
        ws = await ws_connect(live_app.url, token)
        await ws.send(json.dumps({"type": "attach", "message": reply_id, "after": ""}))
        await ws.send(json.dumps({"type": frame_type, "message": bad_id(reply_id), "after": "", "ref": "bad"}))
        text, errors = [], []
        while True:
            event = json.loads(await asyncio.wait_for(ws.recv(), 20))
            if event["type"] == "error" and event["message"] is None:
                errors.append(event)
            elif event["type"] == "delta":
                text.append(event["text"])
            elif event["type"] in {"done", "error"}:
                break
        await still_answers(ws)
        await ws.close()
        return "".join(text), event, errors

    text, final, errors = asyncio.run(scenario())
    assert [(e["code"], e.get("ref")) for e in errors] == [("invalid_frame", "bad")]
    assert final["status"] == "complete"
    assert text == Message.objects.get(pk=reply_id).content  # the attachment was not disturbed


FULL_WIDTH = ["１２-0", "12-０", "١٢-0", "𝟏𝟐"]


@pytest.mark.parametrize("cursor", FULL_WIDTH)
def test_cursors_of_other_scripts_digits_are_refused_over_sse(live_app, token, cursor):
    created = send(live_app.url, token, "short /words 3")
    reply_id = created["assistant_message"]["id"]
    response = httpx.get(
        f"{live_app.url}/api/messages/{reply_id}/events", params={"after": cursor},
        headers={"Authorization": f"Bearer {token}"}, timeout=10,
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_input"


@pytest.mark.parametrize("cursor", FULL_WIDTH)
def test_cursors_of_other_scripts_digits_are_refused_over_websocket(live_app, token, cursor):
    created = send(live_app.url, token, "short /words 3")
    reply_id = created["assistant_message"]["id"]

    async def scenario():
        ws = await ws_connect(live_app.url, token)
        await ws.send(json.dumps({"type": "attach", "message": reply_id, "after": cursor}))
        error = await next_error(ws)
        await ws.close()
        return error

    assert asyncio.run(scenario())["code"] == "invalid_input"


def full_width(digits: str) -> str:
    return "".join(chr(ord(d) - ord("0") + ord("０")) for d in digits)


@pytest.mark.parametrize("spell", [full_width, lambda d: f" {d}", lambda d: f"+{d}", lambda d: f"{d}\n", lambda d: f"0_{d}"])
def test_ids_are_ascii_digits_only(live_app, token, spell):
    headers = {"Authorization": f"Bearer {token}"}
    own = httpx.post(f"{live_app.url}/api/conversations/", json={}, headers=headers).json()["id"]

    async def scenario():
        ws = await ws_connect(live_app.url, token)
        await ws.send(json.dumps({"type": "send", "conversation": spell(str(own)), "content": "x"}))
        error = await next_error(ws)
        await ws.close()
        return error

    assert asyncio.run(scenario())["code"] == "not_found"
    assert not Message.objects.filter(conversation_id=own).exists()
