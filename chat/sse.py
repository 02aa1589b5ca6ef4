"""The Server-Sent Events door: `GET /api/messages/<id>/events` follows a reply from a cursor
(`after` or `Last-Event-ID`), one SSE event per entry, keep-alive comments while it waits."""

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
from django.conf import settings
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse

from chat import events
from chat.actions import ActionError
from chat.replies import attach
from chat.responses import api_view


@api_view({"GET"})
async def message_events(request: HttpRequest, user: Any, pk: int) -> HttpResponse:
    after = request.headers.get("Last-Event-ID") or request.GET.get("after", "")
    if events.parse_cursor(after) is None:
        raise ActionError("invalid_input", 'after / Last-Event-ID must be a cursor such as "120-0".')
    stream = attach(user, pk, after)
    try:
        first = await anext(stream)  # authorization errors become JSON errors, not a broken stream
    except StopAsyncIteration:
        first = []
    response = StreamingHttpResponse(_sse(first, stream), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache, no-transform"
    response["X-Accel-Buffering"] = "no"
    return response


async def _sse(first: list[bytes], stream: AsyncIterator[list[bytes]]) -> AsyncIterator[bytes]:
    queue: asyncio.Queue[list[bytes] | None] = asyncio.Queue()

    async def pump() -> None:
        try:
            async for batch in stream:
                queue.put_nowait(batch)
        finally:
            queue.put_nowait(None)

    task = asyncio.create_task(pump())
    try:
        yield b"retry: 2000\n\n" + _sse_frames(first)
        if first and _ends(first):
            return
        while True:
            try:
                batch = await asyncio.wait_for(queue.get(), timeout=settings.PARLEY_SSE_KEEPALIVE_SECONDS)
            except TimeoutError:
                yield b": keep-alive\n\n"
                continue
            if batch is None:
                return
            yield _sse_frames(batch)
            if _ends(batch):
                return
    finally:
        task.cancel()


def _ends(batch: list[bytes]) -> bool:
    return orjson.loads(batch[-1])["type"] in {"done", "error"}


def _sse_frames(batch: list[bytes]) -> bytes:
    out = bytearray()
    for payload in batch:
        event = orjson.loads(payload)
        out += b"event: %s\nid: %s\ndata: %s\n\n" % (event["type"].encode(), event["cursor"].encode(), payload)
    return bytes(out)
