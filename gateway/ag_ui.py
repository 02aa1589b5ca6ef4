"""The AG-UI door: `POST /api/ag-ui/agent` takes a `RunAgentInput` and streams a Parley agent run
as AG-UI events over SSE; `GET /api/ag-ui/agent?threadId=…&runId=…` with `Last-Event-ID` resumes it.

A thin adapter over the agents app: a thread is a conversation of the caller's
(`Source.AG_UI`, its thread id as `external_id`), the last user message is the goal of a run started
by `agents.actions.start_run`, an interrupt's answer (`resume`) is a decision taken by
`agents.actions.decide`, and the stream is the run's log followed by `agents.attach.attach_run` and
translated by gateway/ag_ui_wire.py. Nothing here calls a provider or the ledger.

Every SSE frame's id is the event's number in its AG-UI run, from 1. A client that lost its
connection asks for the same run again (the GET, or the same POST: a runId already known on the
thread is never started twice) with `Last-Event-ID: <the last number it got>` and gets what came
after, exactly. Who calls: an API token with the gateway scope (from a page of another origin only
if the token lists it), or a signed-in session from the site's own origin. docs/ag-ui.md has it all.
"""

import contextlib
import hashlib
from collections.abc import AsyncIterator
from typing import Any, cast

import orjson
from channels.db import database_sync_to_async
from django.conf import settings
from django.db import transaction
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from accounts.models import ApiToken, User
from agents import actions
from agents.attach import attach_run
from agents.models import AgentStep
from chat.actions import ActionError, default_model, resolve_model
from chat.models import Conversation, Source
from chat.responses import json_error
from chat.titles import fallback_title
from gateway import auth
from gateway.ag_ui_wire import Answer, RunInput, Segment, Translator, read_input, sse
from parley.origin import origin_allowed
from streaming import process
from streaming.keys import run_owner_key
from streaming.writer import RUN_OWNER_SECONDS

STARTING = b"starting"  # a run id taken by a POST whose run is being started


@csrf_exempt
async def agent(request: HttpRequest) -> HttpResponse:
    if request.method == "OPTIONS":
        return _preflight(request)
    if request.method not in ("POST", "GET"):
        return json_error("method_not_allowed")
    caller = await _caller(request)
    if isinstance(caller, HttpResponse):
        return caller
    user, token = caller
    try:
        response = await (_run(request, user, token) if request.method == "POST" else _resume(request, user))
    except ActionError as error:
        response = json_error(error.code, error.detail, error.retry_after, error.limit)
    return _shared(request, response) if token is not None else response


async def _caller(request: HttpRequest) -> tuple[User, ApiToken | None] | HttpResponse:
    """An API token with the gateway scope (from a page of another origin, one the token lists);
    else a session, whose POSTs must come from the site's own origin (this view is exempt from the
    CSRF check, which this replaces)."""
    origin = request.headers.get("Origin")
    own = origin is not None and origin_allowed(origin, request.headers.get("Host", ""), request.is_secure())
    if auth.raw_key(request) is not None:
        token = await auth.gateway_token(request)
        if isinstance(token, auth.Refusal):
            return json_error("insufficient_scope" if token.reason == "scope" else "not_authenticated", token.words)
        if origin is not None and not own and not token.allows_origin(origin):
            return json_error("forbidden", f"This API token may not be used from {origin}: add it to the token's allowed origins.")
        return token.user, token
    user = await request.auser()
    if not user.is_authenticated:
        return json_error("not_authenticated", "Send a Parley API token as 'Authorization: Bearer <token>', or sign in.")
    if request.method == "POST" and not own:
        return json_error("forbidden", "A signed-in page may start runs only from this site; other origins send an API token.")
    return cast(User, user), None


def _preflight(request: HttpRequest) -> HttpResponse:
    """A browser's CORS preflight carries no token, so it cannot be judged here: it is answered for
    any origin, and the request itself is refused unless its token lists the page's origin."""
    response = HttpResponse(status=204)
    response["Access-Control-Allow-Methods"] = "GET, POST"
    response["Access-Control-Allow-Headers"] = "Authorization, Content-Type, Last-Event-ID, x-api-key"
    response["Access-Control-Max-Age"] = "600"
    return _shared(request, response)


def _shared(request: HttpRequest, response: HttpResponse) -> HttpResponse:
    """A page of another origin may read the answer (its token was checked to allow that origin)."""
    origin = request.headers.get("Origin")
    if origin:
        response["Access-Control-Allow-Origin"] = origin
        response["Access-Control-Expose-Headers"] = "x-parley-run"
        response["Vary"] = "Origin"
    return response


async def _run(request: HttpRequest, user: User, token: ApiToken | None) -> HttpResponse:
    if not (request.content_type or "").startswith("application/json"):
        raise ActionError("unsupported_media_type")
    parsed = read_input(request.body)
    after = _after(request)
    key = _segment_key(user.pk, parsed.thread_id, parsed.run_id)
    redis = process.event_log().redis
    known = await redis.get(key)
    if known == STARTING or (known is None and not await redis.set(key, STARTING, nx=True, ex=60)):
        raise ActionError("conversation_busy", "A run with this runId is being started on this thread; ask again in a moment.")
    if known is not None:  # the same POST again (a retry, a reconnect): the same run, never a second one
        return await _again(user, parsed.thread_id, parsed.run_id, known, after)
    try:
        segment = await _begin(user, token, parsed)
    except BaseException:
        await redis.delete(key)
        raise
    await redis.set(key, segment.as_value(), ex=RUN_OWNER_SECONDS)
    # Before the answer, as agents/api.py does: the attach finds the owner without a database hop.
    await redis.set(run_owner_key(segment.run), user.pk, ex=RUN_OWNER_SECONDS, nx=True)
    return _stream(user, parsed.thread_id, parsed.run_id, segment, after)


async def _resume(request: HttpRequest, user: User) -> HttpResponse:
    thread_id, run_id = request.GET.get("threadId", ""), request.GET.get("runId", "")
    if not thread_id or not run_id:
        raise ActionError("invalid_input", "Name the run to resume: ?threadId=…&runId=…")
    after = _after(request)
    # Keyed by the caller: another user's thread and run, whatever their names, are not found.
    known = await process.event_log().redis.get(_segment_key(user.pk, thread_id, run_id))
    if known is None or known == STARTING:
        raise ActionError("not_found")
    return await _again(user, thread_id, run_id, known, after)


async def _again(user: User, thread_id: str, run_id: str, known: bytes, after: int) -> HttpResponse:
    """An AG-UI run read again; its Parley run may be gone since (its conversation deleted)."""
    segment = Segment.of_value(known.decode())
    await database_sync_to_async(actions.get_run_for)(user, segment.run)
    return _stream(user, thread_id, run_id, segment, after)


def _after(request: HttpRequest) -> int:
    """How many events of the run the client has: the last SSE id it got (`Last-Event-ID`, or `?after=`)."""
    raw = request.headers.get("Last-Event-ID") or request.GET.get("after") or "0"
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 9):
        raise ActionError("invalid_input", "Last-Event-ID (or after) must be the id of the last event received, a number.")
    return int(raw)


def _segment_key(user_id: int, thread_id: str, run_id: str) -> str:
    """Which Parley run (and from which approval on) an AG-UI run of the caller's thread streams."""
    digest = hashlib.sha256(f"{len(thread_id)}:{thread_id}:{run_id}".encode()).hexdigest()[:40]
    return f"{settings.PARLEY_KEY_PREFIX}:ag-ui:{user_id}:{digest}"


@database_sync_to_async
def _begin(user: User, token: ApiToken | None, parsed: RunInput) -> Segment:
    """The thread's conversation and the run started (or the interrupt answered) in one commit:
    a refused start leaves nothing behind."""
    with transaction.atomic():
        conversation = _thread(user, token, parsed)
        if parsed.answer is not None:
            return _decide(user, conversation.pk, parsed.answer)
        return Segment(actions.start_run(user, conversation.pk, parsed.goal, parsed.model).pk)


def _thread(user: User, token: ApiToken | None, parsed: RunInput) -> Conversation:
    """The caller's conversation of this thread, made at its first run (never anyone else's)."""
    found = Conversation.objects.filter(owner=user, source=Source.AG_UI, external_id=parsed.thread_id).first()
    if found is not None:
        return found
    if parsed.answer is not None:
        raise ActionError("not_found", "This thread has no run to resume.")
    model = resolve_model(parsed.model) if parsed.model else default_model()
    conversation, _ = Conversation.objects.get_or_create(
        owner=user, source=Source.AG_UI, external_id=parsed.thread_id,
        defaults={"model": model, "title": fallback_title(parsed.goal), "title_is_auto": False, "api_token": token},
    )
    return conversation


def _decide(user: User, conversation_id: int, answer: Answer) -> Segment:
    """The interrupt's answer as the owner's decision; the new AG-UI run goes on from that approval."""
    run = actions.get_run_for(user, answer.run)
    step = AgentStep.objects.filter(run=run, index=answer.step, kind=AgentStep.Kind.APPROVAL).first()
    if run.conversation_id != conversation_id or step is None:
        raise ActionError("not_found", "No such interrupt on this thread.")
    try:
        actions.decide(user, run.pk, step.pk, answer.decision, answer.note)
    except ActionError as error:
        # Giving up on an approval already settled (decided elsewhere, expired, the run ended) asks
        # nothing of the run: the client still gets the rest of it.
        if not (answer.abandoned and error.code in ("not_awaiting_approval", "run_finished")):
            raise
    return Segment(run.pk, answer.step)


def _stream(user: User, thread_id: str, run_id: str, segment: Segment, after: int) -> HttpResponse:
    response = StreamingHttpResponse(_events(user, thread_id, run_id, segment, after), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache, no-transform"
    response["X-Accel-Buffering"] = "no"
    response["x-parley-run"] = str(segment.run)
    return response


async def _events(user: User, thread_id: str, run_id: str, segment: Segment, after: int) -> AsyncIterator[bytes]:
    """The AG-UI run's events after the first `after`, from the Parley run's whole log (the
    translation is a function of the log: the same events, numbered the same, on every reading)."""
    translator = Translator(thread_id, run_id, segment)
    number = 0

    def frames(translated: list[dict[str, Any]]) -> bytes:
        nonlocal number
        out = []
        for event in translated:
            number += 1
            if number > after:
                out.append(sse(number, event))
        return b"".join(out)

    head = frames(translator.opening()) if segment.after_step == 0 else b""
    # aclosing: a client that goes away ends the reader at once; the run itself goes on, resumable.
    async with contextlib.aclosing(attach_run(user, segment.run, "0-0", idle=settings.PARLEY_SSE_KEEPALIVE_SECONDS)) as batches:
        yield b"retry: 2000\n\n" + head
        async for batch in batches:
            if not batch:
                yield b": keep-alive\n\n"
                continue
            chunk = []
            for entry in batch:
                event = orjson.loads(entry.payload)
                expires = await _expiry(segment.run, event) if translator.opened and event["type"] == "approval_requested" else None
                chunk.append(frames(translator.feed(event, expires)))
                if translator.ended:
                    break
            yield b"".join(chunk)
            if translator.ended:
                return


@database_sync_to_async
def _expiry(run_id: int, event: dict[str, Any]) -> str | None:
    """When an approval the run asks for lapses (fixed when it is asked; the log does not carry it)."""
    expires = AgentStep.objects.filter(run_id=run_id, index=event["step"], kind=AgentStep.Kind.APPROVAL).values_list("expires", flat=True).first()
    return expires.isoformat() if expires else None
