"""The OpenAI-compatible door: `POST /v1/chat/completions` (streaming and not) and `GET /v1/models`.

A thin adapter: the request is read into a `gateway.calls.CallRequest`, the call runs on the one
model-call path (gateway/calls.py), and its reply's events are written as Chat Completions
chunks. Refusals take OpenAI's error shape and status codes, with `retry-after` and the
`x-ratelimit-*` headers its SDKs read; a limit that resets only in hours says `x-should-retry: false`
so that no SDK retries in vain.
"""

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from channels.db import database_sync_to_async
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from accounts.models import ApiToken
from accounts.plans import limits_for
from chat.actions import ActionError
from chat.models import ChatModel
from gateway import auth, calls, openai_wire
from gateway.calls import Piece
from streaming import events

# ActionError and provider error codes, as OpenAI's (status, type, code).
ERRORS: dict[str, tuple[int, str, str | None]] = {
    "invalid_input": (400, "invalid_request_error", None),
    "invalid_json": (400, "invalid_request_error", None),
    "unsupported_media_type": (400, "invalid_request_error", None),
    "empty_message": (400, "invalid_request_error", None),
    "message_too_long": (400, "invalid_request_error", "string_above_max_length"),
    "context_too_long": (400, "invalid_request_error", "context_length_exceeded"),
    "model_cannot_see_images": (400, "invalid_request_error", "image_not_supported"),
    "file_too_large": (400, "invalid_request_error", "image_too_large"),
    "request_too_large": (413, "invalid_request_error", "request_too_large"),
    "unknown_model": (404, "invalid_request_error", "model_not_found"),
    "model_not_allowed": (403, "permission_error", "model_not_allowed"),
    "suspended": (403, "permission_error", "account_suspended"),
    "not_authenticated": (401, "invalid_request_error", "invalid_api_key"),
    "insufficient_scope": (403, "permission_error", "insufficient_scope"),
    "method_not_allowed": (405, "invalid_request_error", None),
    "not_found": (404, "invalid_request_error", None),
    "forbidden": (403, "permission_error", None),
    "server_error": (500, "server_error", None),
    "quota_exceeded": (429, "requests", "rate_limit_exceeded"),
    "busy": (503, "server_error", "server_busy"),
    "rate_limited": (429, "requests", "rate_limit_exceeded"),
    "overloaded": (503, "server_error", "overloaded"),
    "timeout": (504, "server_error", "timeout"),
    "provider_unavailable": (502, "server_error", "provider_unavailable"),
    "auth_failed": (502, "server_error", "upstream_auth_failed"),
    "bad_request": (400, "invalid_request_error", "upstream_bad_request"),
    "cancelled": (499, "server_error", "cancelled"),
}
# Limits that reset within minutes are worth an SDK's retry; a day's or a month's are not.
RETRYABLE_LIMITS = {"requests_per_minute", "concurrent_replies"}


def error_response(
    code: str, text: str = "", retry_after: float | None = None, limit: dict[str, Any] | None = None,
    param: str | None = None,
) -> HttpResponse:
    status, kind, openai_code = ERRORS.get(code, (500, "server_error", code))
    if code == "quota_exceeded" and limit is not None and limit["name"] not in RETRYABLE_LIMITS:
        kind, openai_code = "insufficient_quota", "insufficient_quota"
    message = text or (events.request_error(code)["text"] if code in events.REQUEST_ERRORS or code in ERRORS else code)
    body = {"error": {"message": message, "type": kind, "param": param, "code": openai_code}}
    headers = openai_wire.refusal_headers(status, retry_after, limit)
    return HttpResponse(orjson.dumps(body), status=status, content_type="application/json", headers=headers)


def _refused(refusal: auth.Refusal) -> HttpResponse:
    return error_response("insufficient_scope" if refusal.reason == "scope" else "not_authenticated", refusal.words)


@csrf_exempt
async def chat_completions(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        return error_response("method_not_allowed")
    token = await auth.gateway_token(request)
    if isinstance(token, auth.Refusal):
        return _refused(token)
    try:
        body = request.body
    except RequestDataTooBig:
        # Django's bound on a body held in memory (DATA_UPLOAD_MAX_MEMORY_SIZE), said in OpenAI's shape.
        return error_response("request_too_large", "The request body is too large: send smaller images or fewer of them.")
    try:
        parsed = openai_wire.read_request(body, request.content_type)
        started = await calls.start(token, parsed.call)
    except ActionError as error:
        return error_response(error.code, error.detail, error.retry_after, error.limit, getattr(error, "param", None))
    message_id = started["assistant_message"]["id"]
    pieces = calls.follow(started)
    # The first piece decides the status: a call that failed before its first token answers with
    # an error status that the SDKs' retries understand, not a 200 stream holding an error.
    first = await calls.first_piece(token.user, started, pieces)
    if first.final is not None and first.final["type"] == "error":
        await pieces.aclose()
        final = first.final
        return error_response(final["code"], final["text"], final.get("retry_after"))
    reply = openai_wire.Completion(f"chatcmpl-{message_id}", int(time.time()), parsed.call.model)
    headers = {"x-parley-message-id": str(message_id)}
    if not parsed.stream:
        return await _whole(token, message_id, reply, first, pieces, headers)
    response = StreamingHttpResponse(
        _chunks(token, message_id, reply, first, pieces, parsed.include_usage), content_type="text/event-stream",
        headers=headers,
    )
    response["Cache-Control"] = "no-cache, no-transform"
    response["X-Accel-Buffering"] = "no"
    return response


async def _whole(
    token: ApiToken, message_id: int, reply: "openai_wire.Completion", first: Piece, pieces: AsyncIterator[Piece],
    headers: dict[str, str],
) -> HttpResponse:
    text, final = await calls.collect(token.user, message_id, first, pieces)
    if final["type"] == "error":
        # A reply that failed part way is no completion: the client gets the error, as from OpenAI.
        return error_response(final["code"], final["text"], final.get("retry_after"))
    body = reply.whole(text, final)
    return HttpResponse(orjson.dumps(body), content_type="application/json", headers=headers)


async def _chunks(
    token: ApiToken, message_id: int, reply: "openai_wire.Completion", first: Piece, pieces: AsyncIterator[Piece],
    include_usage: bool,
) -> AsyncIterator[bytes]:
    ended = False
    # aclosing: a client that goes away closes this generator at a `yield`; the reply's reader
    # ends with it, and the reply stops (nobody can resume an OpenAI call).
    async with contextlib.aclosing(pieces):
        try:
            yield reply.sse(reply.opening())
            async for piece in _prepend(first, pieces):
                if piece.text:
                    yield reply.sse(reply.text_chunk(piece.text))
                if piece.final is not None:
                    ended = True
                    for chunk in reply.closing(piece.final, include_usage):
                        yield reply.sse(chunk)
                    yield b"data: [DONE]\n\n"
                    return
        finally:
            if not ended:
                await calls.stop(token.user, message_id)


async def _prepend(first: Piece, pieces: AsyncIterator[Piece]) -> AsyncIterator[Piece]:
    yield first
    async for piece in pieces:
        yield piece


@csrf_exempt
async def models(request: HttpRequest) -> HttpResponse:
    """The models this token's owner may call: the offered catalogue within their plan."""
    if request.method != "GET":
        return error_response("method_not_allowed")
    token = await auth.gateway_token(request)
    if isinstance(token, auth.Refusal):
        return _refused(token)
    listed = await _models_for(token)
    return HttpResponse(orjson.dumps({"object": "list", "data": listed}), content_type="application/json")


async def model(request: HttpRequest, name: str) -> HttpResponse:
    """One model of the list (the SDK's `models.retrieve`), or 404 in OpenAI's shape."""
    if request.method != "GET":
        return error_response("method_not_allowed")
    token = await auth.gateway_token(request)
    if isinstance(token, auth.Refusal):
        return _refused(token)
    found = [entry for entry in await _models_for(token) if entry["id"] == name]
    if not found:
        return error_response("unknown_model", f"The model {name!r} is not offered to this token.", param="model")
    return HttpResponse(orjson.dumps(found[0]), content_type="application/json")


@database_sync_to_async
def _models_for(token: ApiToken) -> list[dict[str, Any]]:
    _, limits = limits_for(token.user_id)
    offered = ChatModel.objects.pickable()
    return [
        openai_wire.model_entry(model)
        for model in offered
        if limits.allowed_models is None or model.pk in limits.allowed_models or model.is_auto
    ]
