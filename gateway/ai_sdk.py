"""The Vercel AI SDK door: `POST /api/ai-sdk/chat` (what `useChat` sends) and
`GET /api/ai-sdk/chat/<id>/stream` (its resume).

A chat is a Parley conversation of the caller keyed by the chat's id (`source=ai_sdk`,
`external_id=<id>`): its first post creates it, later ones send the last user message in it
through chat/replies.py, like the chat page's own sends (limits, budgets, the ledger, routing and
failover all apply). The reply runs on whether or not the page stays: a resume from any web
process replays it from its start out of the event log, as the SDK's transport expects; the
chat page's Stop (`POST /api/messages/<id>/stop`, the id being the reply's `messageId`) or
`POST /api/ai-sdk/chat/<id>/stop` (for a page elsewhere, with its token) stops it.

Who may call: a signed-in page of this site (its session cookie; the transport sends no CSRF
token, so the Origin and Sec-Fetch-Site headers must say this site), or an API token with the
gateway scope (`Authorization: Bearer`), from any origin the token lists (CORS).
"""

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import IntegrityError, transaction
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from accounts.models import ApiToken, User
from chat import replies
from chat.actions import ActionError, create_conversation
from chat.models import Conversation, Message, Source
from chat.responses import json_error, json_response, read_json_bytes
from gateway import ai_sdk_wire, auth, calls
from gateway.ai_sdk_wire import ChatPost
from parley.origin import origin_allowed

ALLOWED_HEADERS = "Authorization, Content-Type"
EXPOSED_HEADERS = "x-vercel-ai-ui-message-stream, x-parley-message-id, Retry-After, RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset, RateLimit-Policy"
PREFLIGHT_MAX_AGE = "600"


@dataclass(frozen=True, slots=True)
class Caller:
    user: User
    cors: dict[str, str] = field(default_factory=dict)  # a token's page on another origin


def _cors(origin: str) -> dict[str, str]:
    # The origin echoed, never "*", and no Allow-Credentials: a page elsewhere sends its token, not cookies.
    return {"Access-Control-Allow-Origin": origin, "Access-Control-Expose-Headers": EXPOSED_HEADERS, "Vary": "Origin"}


def _own_origin(request: HttpRequest, origin: str) -> bool:
    return origin_allowed(origin, request.META.get("HTTP_HOST", ""), request.is_secure())


def _with(response: HttpResponse, headers: dict[str, str]) -> HttpResponse:
    for name, value in headers.items():
        response[name] = value
    return response


async def _caller(request: HttpRequest) -> Caller | HttpResponse:
    """The caller, or the refusal to send: a token (its origins checked) or this site's signed-in page."""
    origin = request.headers.get("Origin")
    if auth.raw_key(request) is not None:
        token = await auth.gateway_token(request)
        if isinstance(token, auth.Refusal):
            return json_error("insufficient_scope" if token.reason == "scope" else "not_authenticated", token.words)
        if origin is None or _own_origin(request, origin):
            return Caller(token.user)
        if not token.allows_origin(origin):
            return json_error("forbidden", f"This API token does not allow pages of {origin}: add it to the token's origins.")
        return Caller(token.user, _cors(origin))
    user = await request.auser()
    if not user.is_authenticated:
        return json_error("not_authenticated", "Sign in, or send an API token with the gateway scope as 'Authorization: Bearer <token>'.")
    if not _same_site_page(request, origin):
        return json_error("forbidden", "A signed-in request must come from this site's own pages; other origins send an API token.")
    return Caller(user)


def _same_site_page(request: HttpRequest, origin: str | None) -> bool:
    """Whether a cookie-authenticated request comes from this site's pages: browsers name the page's
    origin on every POST (and Sec-Fetch-Site on every request), so a POST that names none is refused."""
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return False
    if origin is not None:
        return _own_origin(request, origin)
    return request.method == "GET" or fetch_site is not None


async def _readable(request: HttpRequest, refusal: HttpResponse) -> HttpResponse:
    """A refusal a page of a token's origin can read (an expired token, say), rather than a
    network error; other origins learn nothing."""
    origin = request.headers.get("Origin")
    if origin is not None and not _own_origin(request, origin) and await _token_origin_known(origin):
        return _with(refusal, _cors(origin))
    return refusal


@database_sync_to_async
def _token_origin_known(origin: str) -> bool:
    """Whether some live token with the gateway scope lists this origin (a preflight carries no token)."""
    candidates = ApiToken.objects.filter(allowed_origins__icontains=origin.rstrip("/"), revoked__isnull=True)
    return any(token.is_live and token.allows(ApiToken.Scope.GATEWAY) and token.allows_origin(origin) for token in candidates)


async def _preflight(request: HttpRequest, methods: str) -> HttpResponse:
    origin = request.headers.get("Origin")
    if origin is None or not await _token_origin_known(origin):
        return HttpResponse(status=204, headers={"Allow": f"{methods}, OPTIONS", "Vary": "Origin"})
    headers = _cors(origin) | {
        "Access-Control-Allow-Methods": f"{methods}, OPTIONS",
        "Access-Control-Allow-Headers": ALLOWED_HEADERS,
        "Access-Control-Max-Age": PREFLIGHT_MAX_AGE,
    }
    return HttpResponse(status=204, headers=headers)


@csrf_exempt
async def chat(request: HttpRequest) -> HttpResponse:
    """A `useChat` send or regenerate, answered with the reply's UI message stream."""
    if request.method == "OPTIONS":
        return await _preflight(request, "POST")
    if request.method != "POST":
        return json_error("method_not_allowed")
    caller = await _caller(request)
    if isinstance(caller, HttpResponse):
        return await _readable(request, caller)
    try:
        post = ai_sdk_wire.read_post(read_json_bytes(request.body, request.content_type))
        started = await _start(caller.user, post)
    except ActionError as error:
        return _with(json_error(error.code, error.detail, error.retry_after, error.limit), caller.cors)
    reply = ai_sdk_wire.Reply(started["assistant_message"]["id"], started["conversation"]["id"])
    return _stream(caller, reply)


@csrf_exempt
async def resume(request: HttpRequest, chat_id: str) -> HttpResponse:
    """The chat's running reply from its start, wherever it runs; 204 when none is running."""
    if request.method == "OPTIONS":
        return await _preflight(request, "GET")
    if request.method != "GET":
        return json_error("method_not_allowed")
    caller = await _caller(request)
    if isinstance(caller, HttpResponse):
        return await _readable(request, caller)
    running = await _running_reply(caller.user, chat_id)
    if running is None:
        return HttpResponse(status=204, headers=caller.cors)
    return _stream(caller, ai_sdk_wire.Reply(*running))


@csrf_exempt
async def stop(request: HttpRequest, chat_id: str) -> HttpResponse:
    """Stop the chat's running reply (a page elsewhere, with its gateway token, cannot reach the
    chat page's own Stop); its stream ends with `abort` for every reader. 204 when none runs."""
    if request.method == "OPTIONS":
        return await _preflight(request, "POST")
    if request.method != "POST":
        return json_error("method_not_allowed")
    caller = await _caller(request)
    if isinstance(caller, HttpResponse):
        return await _readable(request, caller)
    running = await _running_reply(caller.user, chat_id)
    if running is None:
        return HttpResponse(status=204, headers=caller.cors)
    try:
        stopping = await replies.stop_message(caller.user, running[0])
    except ActionError as error:  # it ended meanwhile
        return _with(json_error(error.code, error.detail), caller.cors)
    return _with(json_response(dict(stopping), status=202), caller.cors)


async def _start(user: User, post: ChatPost) -> dict[str, Any]:
    """The post's reply started: a send in the chat's conversation (created for a new chat), or a
    regenerate of its latest reply. Raises ActionError for a refusal."""
    conversation_id, created = await _conversation(user, post.chat_id, post.model, create=post.trigger == "submit-message")
    try:
        if post.trigger == "regenerate-message":
            reply_id = await _reply_to_regenerate(conversation_id, post.message_id)
            return dict(await replies.regenerate_message(user, reply_id))
        return dict(await replies.send_message(user, conversation_id, post.text, post.model))
    except ActionError:
        if created:  # a refused first send leaves no empty chat behind
            await _forget_if_empty(conversation_id)
        raise


@database_sync_to_async
def _conversation(user: User, chat_id: str, model: str | None, create: bool) -> tuple[int, bool]:
    """The caller's own conversation for this chat id (another user's same id is theirs alone),
    created when `create`; with whether it was just created."""
    found = _find(user, chat_id)
    if found is not None:
        return found, False
    if not create:
        raise ActionError("not_found", "No chat has this id.")
    try:
        with transaction.atomic():
            conversation = create_conversation(user, model)
            conversation.source, conversation.external_id = Source.AI_SDK, chat_id
            conversation.save(update_fields=["source", "external_id"])
            return conversation.pk, True
    except IntegrityError:  # the same new chat posted twice at once: the other post created it
        found = _find(user, chat_id)
        if found is None:
            raise
        return found, False


def _find(user: User, chat_id: str) -> int | None:
    return (
        Conversation.objects.filter(owner=user, source=Source.AI_SDK, external_id=chat_id)
        .values_list("pk", flat=True)
        .first()
    )


@database_sync_to_async
def _forget_if_empty(conversation_id: int) -> None:
    Conversation.objects.filter(pk=conversation_id, messages__isnull=True).delete()


@database_sync_to_async
def _reply_to_regenerate(conversation_id: int, message_id: str | None) -> int:
    """The reply the page named (one of this chat's), else the reply the chat shows last."""
    replies_here = Message.objects.filter(conversation_id=conversation_id, role=Message.Role.ASSISTANT)
    if message_id is not None and message_id.isascii() and message_id.isdigit() and len(message_id) <= 19:
        named = replies_here.filter(pk=int(message_id)).values_list("pk", flat=True).first()
        if named is not None:
            return named
    leaf = Conversation.objects.filter(pk=conversation_id).values_list("current_leaf_id", flat=True).get()
    shown = replies_here.filter(pk=leaf).values_list("pk", flat=True).first() if leaf else None
    latest = shown or replies_here.order_by("-pk").values_list("pk", flat=True).first()
    if latest is None:
        raise ActionError("invalid_input", "This chat has no reply to regenerate.")
    return latest


@database_sync_to_async
def _running_reply(user: User, chat_id: str) -> tuple[int, int] | None:
    """(reply id, conversation id) of the caller's chat's reply being written, if any."""
    row = (
        Message.objects.filter(
            conversation__owner=user, conversation__source=Source.AI_SDK, conversation__external_id=chat_id,
            role=Message.Role.ASSISTANT, status__in=Message.ACTIVE,
        )
        .order_by("-pk")
        .values_list("pk", "conversation_id")
        .first()
    )
    return row


def _stream(caller: Caller, reply: ai_sdk_wire.Reply) -> StreamingHttpResponse:
    response = StreamingHttpResponse(_chunks(caller.user, reply), content_type="text/event-stream")
    for name, value in (ai_sdk_wire.HEADERS | caller.cors | {"x-parley-message-id": str(reply.message_id)}).items():
        response[name] = value
    return response


async def _chunks(user: User, reply: ai_sdk_wire.Reply) -> AsyncIterator[bytes]:
    """The reply's whole stream, from its start: a page that goes away (closing the fetch, the
    SDK's stop) ends only this reading; the reply runs on, to be resumed or stopped."""
    for chunk in reply.opening():
        yield ai_sdk_wire.sse(chunk)
    pieces = calls.follow_reply(user, reply.message_id, "0-0", idle=settings.PARLEY_SSE_KEEPALIVE_SECONDS)
    async with contextlib.aclosing(pieces):
        try:
            async for piece in pieces:
                if piece is None:
                    yield ai_sdk_wire.KEEP_ALIVE
                    continue
                if piece.text:
                    for chunk in reply.text(piece.text):
                        yield ai_sdk_wire.sse(chunk)
                if piece.final is not None:
                    for chunk in reply.closing(piece.final):
                        yield ai_sdk_wire.sse(chunk)
                    break
        except ActionError as error:  # the reply was deleted meanwhile
            yield ai_sdk_wire.sse({"type": "error", "errorText": error.detail or error.code})
    yield ai_sdk_wire.DONE
