"""The Anthropic-compatible door: `POST /v1/messages` in the Messages format, streaming and not.

A thin adapter: the request is read into a `gateway.calls.CallRequest`, the call runs on the one
model-call path (gateway/calls.py), and its reply's events are written as Anthropic's stream
events (or one message). Refusals take Anthropic's error shape and status codes, with
`retry-after` and `anthropic-ratelimit-*` headers; a limit that resets only in hours (or a budget
spent for the month) says `x-should-retry: false`, which the SDKs obey.
"""

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator
from typing import Any

import orjson
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from accounts.models import ApiToken
from chat.actions import ActionError
from gateway import anthropic_wire, auth, calls
from gateway.calls import Piece
from streaming import events

# ActionError and provider error codes, as Anthropic's (status, error type).
ERRORS: dict[str, tuple[int, str]] = {
    "invalid_input": (400, "invalid_request_error"),
    "invalid_json": (400, "invalid_request_error"),
    "unsupported_media_type": (400, "invalid_request_error"),
    "unsupported_file_type": (400, "invalid_request_error"),
    "unreadable_file": (400, "invalid_request_error"),
    "empty_message": (400, "invalid_request_error"),
    "context_too_long": (400, "invalid_request_error"),
    "model_cannot_see_images": (400, "invalid_request_error"),
    "bad_request": (400, "invalid_request_error"),
    "message_too_long": (413, "request_too_large"),
    "file_too_large": (413, "request_too_large"),
    "request_too_large": (413, "request_too_large"),
    "not_authenticated": (401, "authentication_error"),
    "insufficient_scope": (403, "permission_error"),
    "forbidden": (403, "permission_error"),
    "model_not_allowed": (403, "permission_error"),
    "suspended": (403, "permission_error"),
    "unknown_model": (404, "not_found_error"),
    "not_found": (404, "not_found_error"),
    "method_not_allowed": (405, "invalid_request_error"),
    "quota_exceeded": (429, "rate_limit_error"),
    "rate_limited": (429, "rate_limit_error"),
    "busy": (529, "overloaded_error"),
    "overloaded": (529, "overloaded_error"),
    "timeout": (504, "timeout_error"),
    "provider_unavailable": (500, "api_error"),
    "auth_failed": (500, "api_error"),
    "cancelled": (500, "api_error"),
}
# Failures no retry mends: the upstream refused Parley's own key.
NOT_RETRYABLE = {"auth_failed"}


def error_response(
    code: str, text: str = "", retry_after: float | None = None, limit: dict[str, Any] | None = None,
) -> HttpResponse:
    status, kind = error_kind(code)
    message = text or (events.request_error(code)["text"] if code in events.REQUEST_ERRORS else code)
    body = anthropic_wire.error_event(kind, message)
    return HttpResponse(
        orjson.dumps(body), status=status, content_type="application/json", headers=refusal_headers(code, retry_after, limit),
    )


def error_kind(code: str) -> tuple[int, str]:
    return ERRORS.get(code, (500, "api_error"))


def refusal_headers(code: str, retry_after: float | None, limit: dict[str, Any] | None) -> dict[str, str]:
    """`retry-after` as the SDKs read it, `anthropic-ratelimit-*` for the plan limit that refused,
    and `x-should-retry: false` where waiting a little would not help."""
    headers: dict[str, str] = {}
    if retry_after:
        headers["retry-after"] = str(max(1, math.ceil(retry_after)))
    if limit is not None:
        unit = "tokens" if limit["unit"] == "tokens" else "requests"
        if limit["unit"] != "usd":  # a dollar budget has no header of Anthropic's
            headers[f"anthropic-ratelimit-{unit}-limit"] = str(int(limit["allowed"]))
            headers[f"anthropic-ratelimit-{unit}-remaining"] = str(max(0, int(limit["remaining"])))
            if limit.get("resets_at"):
                headers[f"anthropic-ratelimit-{unit}-reset"] = limit["resets_at"]
        if not calls.worth_retrying(limit):
            headers["x-should-retry"] = "false"
    elif code in NOT_RETRYABLE:
        headers["x-should-retry"] = "false"
    return headers


def _refused(refusal: auth.Refusal) -> HttpResponse:
    return error_response("insufficient_scope" if refusal.reason == "scope" else "not_authenticated", refusal.words)


@csrf_exempt
async def messages(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        return error_response("method_not_allowed")
    token = await auth.gateway_token(request)
    if isinstance(token, auth.Refusal):
        return _refused(token)
    try:
        body = request.body
    except RequestDataTooBig:  # Django's bound on a body held in memory (DATA_UPLOAD_MAX_MEMORY_SIZE)
        return error_response("request_too_large", "The request body is too large: send smaller images or fewer of them.")
    try:
        parsed = anthropic_wire.read_request(body, request.content_type)
        started = await calls.start(token, parsed.call)
    except ActionError as error:
        return error_response(error.code, error.detail, error.retry_after, error.limit)
    message_id = started["assistant_message"]["id"]
    pieces = calls.follow(started)
    # The first piece decides the status: a call that failed before its first token answers with
    # an error status that the SDKs' retries understand, not a 200 stream holding an error.
    first = await calls.first_piece(token.user, started, pieces)
    if first.final is not None and first.final["type"] == "error":
        await pieces.aclose()
        return error_response(first.final["code"], first.final["text"], first.final.get("retry_after"))
    reply = anthropic_wire.Reply(f"msg_{message_id}", parsed.call.model, parsed.call.options.get("stop", ()))
    headers = {"request-id": f"req_parley_{message_id}", "x-parley-message-id": str(message_id)}
    if not parsed.stream:
        return await _whole(token, message_id, reply, first, pieces, headers)
    response = StreamingHttpResponse(_events(token, message_id, reply, first, pieces), content_type="text/event-stream", headers=headers)
    response["Cache-Control"] = "no-cache, no-transform"
    response["X-Accel-Buffering"] = "no"
    return response


@csrf_exempt
async def count_tokens(request: HttpRequest) -> HttpResponse:
    """`POST /v1/messages/count_tokens`: Parley's own estimate of the prompt, the one its budgets reserve."""
    if request.method != "POST":
        return error_response("method_not_allowed")
    token = await auth.gateway_token(request)
    if isinstance(token, auth.Refusal):
        return _refused(token)
    try:
        parsed = anthropic_wire.read_request(request.body, request.content_type, counting=True)
        counted = await calls.count(parsed.call)
    except ActionError as error:
        return error_response(error.code, error.detail, error.retry_after, error.limit)
    return HttpResponse(orjson.dumps({"input_tokens": counted}), content_type="application/json")


async def _whole(
    token: ApiToken, message_id: int, reply: anthropic_wire.Reply, first: Piece, pieces: AsyncIterator[Piece],
    headers: dict[str, str],
) -> HttpResponse:
    text, final = await calls.collect(token.user, message_id, first, pieces)
    if final["type"] == "error":
        # A message is whole or an error: the API has no partial message to give.
        return error_response(final["code"], final["text"], final.get("retry_after"))
    return HttpResponse(orjson.dumps(reply.whole(text, final)), content_type="application/json", headers=headers)


async def _events(
    token: ApiToken, message_id: int, reply: anthropic_wire.Reply, first: Piece, pieces: AsyncIterator[Piece],
) -> AsyncIterator[bytes]:
    ended = False
    text_open = False  # the text block (always the first, index 0) has started
    # aclosing: a client that goes away closes this generator at a `yield` (or cancels it at an
    # `await`); the reply's reader ends with it, and the reply stops (nobody can resume the call).
    async with contextlib.aclosing(pieces), contextlib.aclosing(_with_pings(first, pieces)) as stream:
        try:
            yield reply.sse(reply.opening())
            yield anthropic_wire.PING
            async for piece in stream:
                if piece is None:
                    yield anthropic_wire.PING
                    continue
                if piece.text:
                    if not text_open:
                        text_open = True
                        yield reply.sse(reply.text_start(0))
                    yield reply.sse(reply.text_delta(0, piece.text))
                if piece.final is not None:
                    ended = True
                    if piece.final["type"] == "error":
                        _, kind = error_kind(piece.final["code"])
                        yield reply.sse(anthropic_wire.error_event(kind, piece.final["text"]))
                        return
                    for event in reply.ending(piece.final, text_open):
                        yield reply.sse(event)
                    return
        finally:
            if not ended:
                await calls.stop(token.user, message_id)


async def _with_pings(first: Piece, pieces: AsyncIterator[Piece]) -> AsyncIterator[Piece | None]:
    """The pieces, with None whenever none came for the keep-alive interval: a proxy (or the
    client's read timeout) must not take a model's long silence for a dead connection."""
    yield first
    waiting: asyncio.Task[Piece] | None = None
    try:
        while True:
            if waiting is None:
                waiting = asyncio.ensure_future(anext(pieces))
            done, _ = await asyncio.wait({waiting}, timeout=settings.PARLEY_SSE_KEEPALIVE_SECONDS)
            if not done:
                yield None
                continue
            try:
                piece = waiting.result()
            except StopAsyncIteration:
                return
            waiting = None
            yield piece
    finally:
        if waiting is not None and not waiting.done():
            # The reader must be idle before its owner closes it.
            waiting.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await waiting
