"""Small helpers shared by the streaming tests."""

import asyncio
from typing import Any

from channels.testing import WebsocketCommunicator

from parley.asgi import application


async def connect(
    user: Any = None, origin: bytes | None = b"http://localhost", headers: list | None = None, host: bytes = b"localhost"
) -> WebsocketCommunicator:
    """A browser-like handshake: a page of http://localhost opening the socket of that same host."""
    all_headers = [(b"host", host), *(headers or [])]
    if origin is not None:
        all_headers.append((b"origin", origin))
    communicator = WebsocketCommunicator(application, "/ws/chat/", headers=all_headers)
    if user is not None:
        communicator.scope["user"] = user
    return communicator


async def receive_until_final(communicator: WebsocketCommunicator, message_id: int, timeout: float = 20) -> tuple[list[dict], dict]:
    """Collect this message's deltas until its done/error event."""
    deltas = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        event = await communicator.receive_json_from(timeout=max(0.1, deadline - loop.time()))
        if event.get("message") != message_id:
            continue
        if event["type"] == "delta":
            deltas.append(event)
        elif event["type"] in {"done", "error"}:
            return deltas, event


async def handshake(communicator: WebsocketCommunicator) -> tuple[bool, Any]:
    """(usable, close code or subprotocol): a refused handshake is accepted and closed at once with
    its code, so that browsers see the code (a close before accept reaches them as 1006)."""
    connected, detail = await communicator.connect()
    if not connected:
        return False, detail
    try:
        output = await communicator.receive_output(timeout=0.5)
    except asyncio.TimeoutError:
        return True, detail
    if output["type"] == "websocket.close":
        return False, output.get("code")
    raise AssertionError(f"expected a close or silence after the handshake, got {output}")


def words(count: int) -> str:
    return " ".join(f"word{index}" for index in range(1, count + 1))


async def receive_type(communicator: WebsocketCommunicator, event_type: str, timeout: float = 5) -> dict:
    """The next event of a type, skipping notices (a title set by a Celery worker may arrive any time)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        event = await communicator.receive_json_from(timeout=max(0.1, deadline - loop.time()))
        if event["type"] == event_type:
            return event


async def reply_events(user: Any, message_id: int, after: str = "0-0") -> list[dict]:
    """Every event of a reply from the cursor to its final one, read through chat.replies.attach."""
    import orjson

    from chat.replies import attach

    seen: list[dict] = []
    async for batch in attach(user, message_id, after):
        seen.extend(orjson.loads(entry.payload) for entry in batch)
    return seen
