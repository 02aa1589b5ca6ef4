"""Requests over the transport's size limits, through real daphne: every one gets an answer.

A request line or a header line over 16 KiB is answered 414 or 431 in the JSON error shape; a
WebSocket frame over 256 KiB gets `message_too_long` and the socket stays open; a message over
1 MiB closes the socket with 1009 and a reason.
"""

import asyncio
import json
import socket

import pytest
import websockets

from accounts.models import ApiToken
from chat.models import Message
from tests.test_live_streaming import ws_connect, ws_until_final

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

LONG = "x" * 60_000
UPGRADE = (
    "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    "Sec-WebSocket-Version: 13\r\nOrigin: http://127.0.0.1\r\n"
)


@pytest.fixture
def token(alice) -> str:
    return ApiToken.issue(alice, "limits")[1]


async def next_event(ws) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), 10))


def exchange(url: str, request: str) -> tuple[int, dict[str, str], bytes]:
    """Sends a raw request and reads until the server closes: the connection must be answered, not reset."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request.encode())
        received = b""
        while chunk := sock.recv(65536):  # a reset would raise ConnectionResetError here
            received += chunk
    assert received, "the server closed the connection without an answer"
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value for name, _, value in (line.partition(": ") for line in lines)}
    return int(status_line.split()[1]), headers, body


def assert_json_error(headers: dict[str, str], body: bytes, code: str) -> None:
    assert headers["content-type"] == "application/json"
    assert int(headers["content-length"]) == len(body)
    error = json.loads(body)["error"]
    assert error["code"] == code
    assert error["text"] and error["retry_after"] is None


@pytest.mark.parametrize(
    ("target", "extra"),
    [
        (f"/api/messages/1/events?after={LONG}", ""),
        (f"/api/conversations/?q={LONG}", ""),
        (f"/?{LONG}", ""),
        (f"/ws/chat/?x={LONG}", UPGRADE),
    ],
)
def test_a_60_kb_request_line_is_answered_414_in_json(live_app, token, target, extra):
    status, headers, body = exchange(
        live_app.url, f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n{extra}\r\n"
    )
    assert status == 414
    assert_json_error(headers, body, "uri_too_long")


def test_a_60_kb_header_line_is_answered_431_in_json(live_app, token):
    request = f"GET /api/models/ HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nX-Padding: {LONG}\r\n\r\n"
    status, headers, body = exchange(live_app.url, request)
    assert status == 431
    assert_json_error(headers, body, "headers_too_large")


def test_a_request_under_the_limit_is_served_on_the_same_server(live_app, token):
    request = f"GET /api/conversations/?q={'x' * 8000} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    status, _, body = exchange(live_app.url, request)
    assert status == 200
    assert json.loads(body)["results"] == []


def test_a_frame_over_256_kib_gets_message_too_long_and_the_socket_stays_open(live_app, token):
    async def scenario():
        ws = await ws_connect(live_app.url, token)
        content = "x" * (512 * 1024)  # over the consumer's limit, under daphne's
        await ws.send(json.dumps({"type": "send", "conversation": None, "content": content, "ref": 1}))
        error = await next_event(ws)
        await ws.send(json.dumps({"type": "send", "conversation": None, "content": "still here /words 2"}))
        created = await next_event(ws)
        _, final = await ws_until_final(ws, created["assistant_message"]["id"])
        await ws.close()
        return error, created, final

    error, created, final = asyncio.run(scenario())
    assert error["type"] == "error" and error["code"] == "message_too_long"
    assert "256 KiB" in error["text"]
    assert created["type"] == "message" and final["status"] == "complete"
    assert Message.objects.filter(role="user").count() == 1  # only the good frame's message


@pytest.mark.parametrize("size", [1024 * 1024 + 1, 3 * 1024 * 1024])
def test_a_message_over_1_mib_is_closed_with_1009_and_a_reason(live_app, token, size):
    async def scenario():
        ws = await ws_connect(live_app.url, token)
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.send("x" * size)
            await asyncio.wait_for(ws.recv(), 10)
        return closed.value

    closed = asyncio.run(scenario())
    assert closed.rcvd is not None, "the server dropped the connection without a close frame"
    assert closed.rcvd.code == 1009
    assert "exceeds payload limit of 1048576" in closed.rcvd.reason


def test_a_fragmented_message_over_1_mib_is_closed_with_1009(live_app, token):
    async def scenario():
        ws = await ws_connect(live_app.url, token)
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.send(["x" * (400 * 1024) for _ in range(3)])  # each frame fits; the message does not
            await asyncio.wait_for(ws.recv(), 10)
        return closed.value

    closed = asyncio.run(scenario())
    assert closed.rcvd is not None and closed.rcvd.code == 1009
