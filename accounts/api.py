"""The account's JSON door: everything of the user's as one download (accounts/export.py)."""

import asyncio
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.db import connections
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.utils.http import content_disposition_header

from accounts import export
from chat.actions import ActionError
from chat.responses import api_view

THREAD_NAME = "parley-export"
# Each download under way holds a thread and a database connection of its own: a few per process
# at once, the others asked to come back (a download is rare; a loop of them must not pile up).
AT_ONCE = 4
RETRY_SECONDS = 30
_under_way = 0  # downloads being sent by this process's event loop


@api_view({"GET"})
async def export_data(request: HttpRequest, user: Any) -> HttpResponse:
    """`GET /api/me/export`: the requester's own data, never anyone else's (session or bearer)."""
    if _under_way >= AT_ONCE:
        raise ActionError("busy", "Other downloads of data are under way. Try again in a minute.", retry_after=RETRY_SECONDS)
    chunks = export.document(user, request.build_absolute_uri)
    response = StreamingHttpResponse(in_own_thread(chunks), content_type="application/json")
    response["Content-Disposition"] = content_disposition_header(True, export.filename(user))
    response["Cache-Control"] = "no-store"
    return response


async def in_own_thread(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    """A sync iterator that reads the database, pulled on a thread of its own, one chunk ahead of
    the client. Not on the shared database thread: every stream's hops would wait behind a long
    export. And async: Django serves a sync iterator under ASGI by reading it whole into memory."""
    global _under_way
    loop = asyncio.get_running_loop()
    thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=THREAD_NAME)
    ahead = loop.run_in_executor(thread, next, chunks, None)
    # Counted from the first read: a response never sent (its client gone first) holds nothing.
    _under_way += 1
    try:
        while (chunk := await ahead) is not None:
            ahead = loop.run_in_executor(thread, next, chunks, None)
            yield chunk
    finally:
        _under_way -= 1
        # A client gone half way leaves a read under way: its outcome is nobody's.
        ahead.add_done_callback(lambda future: future.cancelled() or future.exception())
        # After that read, on the same thread: the iterator's cursors, then the thread's connection.
        thread.submit(_close, chunks)
        thread.shutdown(wait=False)


def _close(chunks: Iterator[bytes]) -> None:
    close = getattr(chunks, "close", None)
    try:
        if close is not None:
            close()
    finally:
        connections.close_all()
