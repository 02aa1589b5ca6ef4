"""The protocol doors' one way onto the model-call path.

A client of the OpenAI- or Anthropic-compatible gateway sends a whole call at once: its history,
system prompt, options and tools. It is stored as a conversation of the token's owner with a
queued reply: its whole history, kept for support, when the token stores calls; else the reply's
row alone (no text of the call is ever written), deleted once the reply has ended. It is admitted by `billing/calls.admit` like any reply (plan, allowed model, budget, the
ledger row marked `gateway` with its token), run by `chat/generation` through
`resilience/attempts` (retries, failover, the cache, the breakers) and followed through its event
log. The doors translate; nothing here knows a wire format.
"""

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from channels.db import database_sync_to_async
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts.models import ApiToken
from accounts.plans import limits_for
from billing import calls
from billing.models import UsageRecord
from chat import generation, replies
from chat.actions import ActionError, resolve_model
from chat.history import Turn, fit_history
from chat.models import Conversation, Message, Source
from chat.titles import fallback_title
from parley import statements
from resilience import chains
from resilience.attempts import Target
from routing import router
from streaming import events
from streaming.entries import Entry


UNTITLED = "Gateway call"


@dataclass(frozen=True, slots=True)
class CallRequest:
    """A client's call in Parley's terms. `messages` are `providers.base.ChatRequest` messages:
    user and assistant turns, an assistant's `tool_calls` and `tool` results; the last one is the
    user's or a tool result. `options` are ChatRequest fields the client set (temperature, stop,
    top_p, tool_choice)."""

    model: str
    messages: list[dict[str, Any]]
    system: str = ""
    max_output: int | None = None
    tools: tuple[dict[str, Any], ...] = ()
    options: dict[str, Any] = field(default_factory=dict)
    end_user: str = ""  # the client's name for its own user (OpenAI's `user`, Anthropic's metadata.user_id)

    def turns(self) -> list[Turn]:
        """The call as history turns, for the context window's check and the prompt's reservation:
        tool calls and results count as the text they are."""
        turns: list[Turn] = []
        for message in self.messages:
            text = message.get("content") or ""
            if message["role"] == "tool":
                turns.append(("user", text or "(empty result)"))
                continue
            calls_text = "".join(f"\n{call['name']}({call['arguments']})" for call in message.get("tool_calls", ()))
            attachments = tuple(message.get("attachments", ()))
            if attachments:
                turns.append((message["role"], text + calls_text or " ", attachments))
            else:
                turns.append((message["role"], text + calls_text))
        return turns

    @property
    def last_user_text(self) -> str:
        return next((m.get("content") or "" for m in reversed(self.messages) if m["role"] == "user"), "")


def check(request: CallRequest) -> None:
    """What every protocol requires of a call, whatever its wire format; ActionError otherwise."""
    if not request.messages:
        raise ActionError("invalid_input", "messages must hold at least one message.")
    if request.messages[-1]["role"] not in ("user", "tool"):
        raise ActionError("invalid_input", "The last message must be the user's (or a tool's result).")
    size = len(request.system) + sum(len(m.get("content") or "") for m in request.messages)
    if size > settings.PARLEY_GATEWAY_MAX_CHARS:
        raise ActionError(
            "message_too_long", f"The call holds {size:,} characters; the gateway takes {settings.PARLEY_GATEWAY_MAX_CHARS:,}.",
        )
    if request.max_output is not None and request.max_output < 1:
        raise ActionError("invalid_input", "The most output tokens must be at least 1.")


async def start(token: ApiToken, request: CallRequest) -> events.MessageEvent:
    """Store and start a gateway call for the token's owner; the `message` event of its reply.
    Raises ActionError for a refusal (limits, model, size)."""
    check(request)
    # The page's tabs are not told: a script's calls are not the page's conversations.
    return await replies.start_stored(
        token.user, lambda generator_id: _store(token, request, generator_id), announce=False,
    )


@database_sync_to_async
def _store(token: ApiToken, request: CallRequest, generator_id: str) -> replies.StoredTurn:
    """The call stored in one transaction: admitted, its conversation (the whole history when the
    token stores calls, else nothing of its text, to be deleted at the end) and its queued reply."""
    admitted: calls.Admitted | None = None
    user = token.user
    try:
        with transaction.atomic():
            asked = resolve_model(request.model)
            suspended, limits = limits_for(user.pk, user)  # the token's user was read with it, just now
            if suspended:
                raise ActionError("suspended")
            turns = request.turns()
            routed = router.choose(user.pk, limits, request.last_user_text, [], turns, request.system) if asked.is_auto else None
            admitted = calls.admit(
                user.pk, limits, routed.model if routed else asked, request.system, turns, kind=UsageRecord.Kind.GATEWAY,
                max_output=request.max_output,
            )
            if not admitted.model.supports_vision and any(m.get("attachments") for m in request.messages):
                raise ActionError("model_cannot_see_images", f"{admitted.model.label} cannot read images.")
            if admitted.fitted.dropped:  # a client's history is sent whole or not at all
                raise ActionError(
                    "context_too_long",
                    f"The messages need about {sum(len(t[1]) for t in turns) // 4:,} tokens; {admitted.model.label} "
                    f"has room for {admitted.model.context_window:,} with the output.",
                )
            now = timezone.now()
            kept_text = token.stores_calls
            conversation = Conversation(
                owner=user, model=asked, title_is_auto=False, source=Source.GATEWAY, api_token=token,
                title=fallback_title(request.last_user_text or UNTITLED) if kept_text else UNTITLED,
                system_prompt=request.system if kept_text else "",
                discard_when_done=not kept_text, created=now, updated=now,
            )
            statements.insert(conversation)
            parent_id = None
            # Unkept, the call's text is never written: its reply row alone stands for it while it runs.
            kept = request.messages if kept_text else []
            for message in kept:
                turn = _stored_turn(conversation, parent_id, message, now)
                statements.insert(turn)
                parent_id = turn.pk
            routing: dict[str, Any] = {"end_user": request.end_user} if request.end_user else {}
            if routed is not None:
                routing.update(routed.record())
            reply = Message(
                conversation=conversation, parent_id=parent_id, role=Message.Role.ASSISTANT,
                status=Message.Status.QUEUED, provider=admitted.model.provider, model=admitted.model.name,
                notice=admitted.notice, generator=generator_id, routing=routing,
                quota_claim=admitted.reservation.claim(admitted.call.prompt_estimate), created=now,
                limits=limits.applied(),
            )
            statements.insert(reply)
    except BaseException:
        if admitted is not None:
            calls.release(admitted)
        raise
    admitted = admitted.for_message(conversation.pk, reply.pk)
    admitted = dataclasses.replace(admitted, call=dataclasses.replace(admitted.call, api_token_id=token.pk))
    plan = generation.ReplyPlan(
        message_id=reply.pk,
        conversation_id=conversation.pk,
        target=Target.of(admitted, request.system, request.messages, request.tools).with_options(request.options),
        wants_title=False,
        chain=chains.chain_of(admitted.model),
        readmission=generation.Readmission(
            user.pk, limits, request.system, turns, request.messages, request.tools, request.options, request.max_output,
        ),
        notice=reply.notice,
        routing=reply.routing,
        discard=conversation.discard_when_done,
    )
    event = events.message_started(conversation.as_dict(), {}, reply.as_dict())
    return replies.StoredTurn(event, plan)


def _stored_turn(conversation: Conversation, parent_id: int | None, message: dict[str, Any], now: Any) -> Message:
    """One turn of a client's history as support reads it: tool calls and results in words."""
    text = message.get("content") or ""
    role = Message.Role.ASSISTANT if message["role"] == "assistant" else Message.Role.USER
    if message["role"] == "tool":
        text = f"[Result of tool call {message.get('tool_call_id', '')}]\n{text}"
    for call in message.get("tool_calls", ()):
        text += f"\n[Tool call {call['id']}: {call['name']}({call['arguments']})]"
    return Message(
        conversation=conversation, parent_id=parent_id, role=role, content=text.strip() or "(empty)",
        status=Message.Status.COMPLETE, created=now,
    )


@database_sync_to_async
def count(request: CallRequest) -> int:
    """The call's prompt tokens as Parley reckons them when it reserves a budget (chat/history.py):
    an estimate of the whole call, made without asking a model. ActionError for an unknown model."""
    resolve_model(request.model)
    return fit_history(request.turns(), request.system, 10**12, 0).prompt_estimate


@dataclass(frozen=True, slots=True)
class Piece:
    """What a door reads of a reply's log: text as it streams, then the final event once."""

    text: str = ""
    final: dict[str, Any] | None = None


async def follow(event: events.MessageEvent) -> AsyncIterator[Piece]:
    """The reply a `start` just began, from its first token to its final event."""
    async for batch in replies.follow_sent(event):
        for entry in batch:
            yield _piece(entry)


async def follow_reply(user: Any, message_id: int, after: str = "0-0", idle: float | None = None) -> AsyncIterator[Piece | None]:
    """Any of the user's replies, from a cursor (resuming): from any process, or from the database
    once it has ended. With `idle`, None comes after that many seconds without news."""
    async for batch in replies.attach(user, message_id, after, idle):
        if not batch:
            yield None
        for entry in batch:
            yield _piece(entry)


def _piece(entry: Entry) -> Piece:
    if entry.kind == "delta":
        return Piece(text=entry.text)
    return Piece(final=orjson.loads(entry.payload)) if entry.is_final else Piece()


async def first_piece(user: Any, event: events.MessageEvent, pieces: AsyncIterator[Piece]) -> Piece:
    """A started call's first piece (its first text, or its end), which decides a door's status.
    A client that goes away while it waits (the request is cancelled) stops the reply."""
    try:
        return await anext(pieces)
    except asyncio.CancelledError:
        await stop(user, event["assistant_message"]["id"])
        raise


async def collect(user: Any, message_id: int, first: Piece, pieces: AsyncIterator[Piece]) -> tuple[str, dict[str, Any]]:
    """A started call read to its end for a door that answers it whole: its text and final event.
    A client that goes away meanwhile stops the reply (nobody can resume such a call)."""
    text = [first.text]
    final = first.final
    try:
        async for piece in pieces:
            text.append(piece.text)
            final = piece.final or final
    finally:
        if final is None:
            await stop(user, message_id)
    assert final is not None
    return "".join(text), final


async def stop(user: Any, message_id: int) -> None:
    """The client went away from a call nobody can resume: its reply stops, billed as far as it got."""
    try:
        await replies.stop_message(user, message_id)
    except ActionError:
        pass  # already ended


# Plan limits that reset within minutes are worth a client's retry; a day's or a month's are not.
RETRYABLE_LIMITS = frozenset({"requests_per_minute", "concurrent_replies"})


def worth_retrying(limit: dict[str, Any]) -> bool:
    """Whether a client refused by this plan limit should try again by itself (its SDK's retries)."""
    return limit["name"] in RETRYABLE_LIMITS
