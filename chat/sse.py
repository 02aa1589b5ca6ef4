"""The Server-Sent Events door: `GET /api/messages/<id>/events` follows a reply from a cursor
(`after` or `Last-Event-ID`), one SSE event per entry, keep-alive comments while it waits."""

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse

from chat.actions import ActionError
from chat.replies import attach
from chat.responses import api_view
from streaming import events
from streaming.entries import Entry


@api_view({"GET"})
async def message_events(request: HttpRequest, user: Any, pk: int) -> HttpResponse:
    after = requested_cursor(request, "", example="120-0")
    return await sse_response(attach(user, pk, after, idle=settings.PARLEY_SSE_KEEPALIVE_SECONDS))


def requested_cursor(request: HttpRequest, default: str, example: str) -> str:
    """Where a follower resumes: `Last-Event-ID` (an EventSource reconnecting), else `?after=`."""
    after = request.headers.get("Last-Event-ID") or request.GET.get("after", default)
    if events.parse_cursor(after) is None:
        raise ActionError("invalid_input", f'after / Last-Event-ID must be a cursor such as "{example}".')
    return after


async def sse_response(stream: AsyncIterator[list[Entry]]) -> HttpResponse:
    """A log's batches as an SSE response, for every door that follows a log (replies, agent runs)."""
    try:
        first = await anext(stream)  # authorization errors become JSON errors, not a broken stream
    except StopAsyncIteration:
        first = []
    response = StreamingHttpResponse(_sse(first, stream), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache, no-transform"
    response["X-Accel-Buffering"] = "no"
    return response


async def _sse(first: list[Entry], stream: AsyncIterator[list[Entry]]) -> AsyncIterator[bytes]:
    # aclosing: a client that goes away closes this generator at a `yield`; the reply's reader
    # inside must end with it (and leave the process's remote feeds) at once, not at collection.
    async with contextlib.aclosing(stream):
        yield b"retry: 2000\n\n" + _sse_frames(first)
        if first and first[-1].is_final:
            return
        async for batch in stream:
            if not batch:
                yield b": keep-alive\n\n"
                continue
            yield _sse_frames(batch)
            if batch[-1].is_final:
                return


def _sse_frames(batch: list[Entry]) -> bytes:
    return b"".join(b"event: %s\nid: %s\ndata: %s\n\n" % (e.kind.encode(), e.cursor.encode(), e.payload) for e in batch)
