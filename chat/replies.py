"""Sending, stopping and attaching to replies: the actions behind every transport.

These run on the event loop. Each does its database work in one short thread hop and keeps the
rest (admission, cursors, event log) in memory, so a send costs a few milliseconds of CPU.
"""

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, cast

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import OperationalError, transaction
from django.utils import timezone

from accounts.models import User
from accounts.plans import limits_for
from billing import calls
from billing.models import UsageRecord
from chat import generation, reaper
from chat.actions import ActionError, create_conversation, get_message_for, parse_pk, resolve_model
from chat.models import Conversation, Message
from parley import statements
from parley.redis_clients import sync_client
from providers.base import ChatRequest
from streaming import events, process
from streaming.entries import Entry, merged

BUSY_RETRY_AFTER = 2.0


@dataclass(frozen=True, slots=True)
class StoredTurn:
    event: events.MessageEvent
    plan: generation.ReplyPlan


def clean_content(content: object) -> str:
    if not isinstance(content, str):
        raise ActionError("invalid_input", "content must be text.")
    if not content.strip():
        raise ActionError("empty_message")
    if len(content) > settings.PARLEY_MESSAGE_MAX_CHARS:
        raise ActionError(
            "message_too_long",
            f"The message is {len(content):,} characters long; the limit is {settings.PARLEY_MESSAGE_MAX_CHARS:,}.",
        )
    return content


async def send_message(
    user: User, conversation_id: object, content: object, model_name: object = None, origin: str = ""
) -> events.MessageEvent:
    """Store the user's message and a queued reply, start generating it, and return the `message` event.

    The user's other tabs are told too (all but `origin`, the socket that sent it), so they can follow.
    """
    text = clean_content(content)
    if model_name is not None and not isinstance(model_name, str):
        raise ActionError("invalid_input", "model must be a model name.")
    here = process.current()
    # Taken before the await so that concurrent sends cannot overshoot the bound.
    if not here.slots.take(settings.PARLEY_MAX_GENERATIONS):
        raise ActionError("busy", retry_after=BUSY_RETRY_AFTER)
    try:
        turn = await _store_turn(user, conversation_id, text, model_name or None, here.event_log.generator_id)
    except OperationalError as error:
        here.slots.give_back()
        if "locked" not in str(error):
            raise
        # SQLite takes one writer at a time; past its busy timeout, say "busy" rather than fail.
        raise ActionError("busy", retry_after=BUSY_RETRY_AFTER) from error
    except BaseException:
        here.slots.give_back()
        raise
    generation.start(here, turn.plan)
    await here.feeds.publish(user.pk, {**turn.event, "origin": origin})
    return turn.event


@database_sync_to_async
def _store_turn(user: User, conversation_id: object, text: str, model_name: str | None, generator_id: str) -> StoredTurn:
    admitted: calls.Admitted | None = None
    try:
        with transaction.atomic():
            if conversation_id is None:
                conversation = create_conversation(user, model_name)
                earlier = []
            else:
                # The owner's row comes along, fresh: suspension and plan, without another query.
                found = statements.select_one(
                    Conversation, {"id": parse_pk(conversation_id), "owner": user.pk}, related=("model", "owner"), lock=True
                )
                if found is None:
                    raise ActionError("not_found")
                conversation = cast(Conversation, found)
                if model_name and model_name != conversation.model.name:
                    conversation.model = resolve_model(model_name)
                earlier = statements.values_by(Message, ("id", "role", "content", "status"), "conversation", conversation.pk)
            chosen = conversation.model
            if not chosen.is_offered:
                raise ActionError("unknown_model", f"The model {chosen.name!r} is no longer offered. Pick another one.")
            if any(status in Message.ACTIVE for _, _, _, status in earlier):
                raise ActionError("conversation_busy")
            suspended, limits = limits_for(user.pk, conversation.owner if conversation_id is not None else None)
            if suspended:
                raise ActionError("suspended")
            turns = [(role, content) for _, role, content, _ in earlier] + [(Message.Role.USER, text)]
            admitted = calls.admit(
                user.pk, limits, chosen, conversation.system_prompt, turns, kind=UsageRecord.Kind.REPLY,
                conversation_id=conversation.pk,
            )
            model = admitted.model
            now = timezone.now()
            user_message = Message(
                conversation=conversation, parent_id=earlier[-1][0] if earlier else None,
                role=Message.Role.USER, content=text, status=Message.Status.COMPLETE, created=now,
            )
            statements.insert(user_message)
            reply = Message(
                conversation=conversation, parent=user_message, role=Message.Role.ASSISTANT,
                status=Message.Status.QUEUED, provider=model.provider, model=model.name,
                notice=" ".join(filter(None, (admitted.notice, admitted.fitted.notice))), generator=generator_id,
                quota_claim=admitted.reservation.claim(admitted.call.prompt_estimate), created=now,
            )
            statements.insert(reply)
            conversation.updated = now
            statements.update(Conversation, conversation.pk, {"updated": now, "model": conversation.model_id})
    except BaseException:
        if admitted is not None:  # nothing was stored: the request and its reservation are given back
            calls.release(admitted)
        raise
    admitted = admitted.for_message(conversation.pk, reply.pk)
    base_url, api_key = model.route()
    plan = generation.ReplyPlan(
        message_id=reply.pk,
        conversation_id=conversation.pk,
        provider=model.provider,
        request=ChatRequest(
            model=model.model_id, messages=admitted.fitted.messages, system=conversation.system_prompt,
            max_output_tokens=admitted.max_output, base_url=base_url, api_key=api_key,
        ),
        wants_title=not earlier and conversation.title_is_auto and not conversation.title,
        usage=admitted.call,
        reservation=admitted.reservation,
    )
    event = events.message_started(conversation.as_dict(), user_message.as_dict(), reply.as_dict())
    return StoredTurn(event, plan)


async def stop_message(user: User, message_id: object) -> events.StoppingEvent:
    message = await database_sync_to_async(get_message_for)(user, message_id)
    if message.role != Message.Role.ASSISTANT:
        raise ActionError("invalid_input", "Only replies can be stopped.")
    if not message.is_active:
        raise ActionError("already_finished")
    await process.event_log().request_stop(message.pk)
    return events.stopping(message.pk, ended_here=await _stop_orphan(message))


@database_sync_to_async
def _stop_orphan(message: Message) -> bool:
    """Stop means stop even when the reply's process has died: end it here instead of waiting for the reaper."""
    client = sync_client()
    return reaper.generator_is_gone(client, message) and reaper.end_orphan(
        client, message.pk, message.content, Message.Status.STOPPED
    )


@dataclass(frozen=True, slots=True)
class _StoredReply:
    id: int
    role: str
    active: bool
    final_event: dict[str, Any]
    text: str


async def attach(user: User, message_id: object, after: object, idle: float | None = None) -> AsyncIterator[list[Entry]]:
    """The read API every door uses: authorize, then yield batches of entries after the cursor,
    ending with the final one, whether the reply is being written here, elsewhere, or is stored.
    With `idle`, an empty batch comes after that many seconds without news (see EventLog.follow)."""
    cursor = events.parse_cursor(after)
    if cursor is None:
        raise ActionError("invalid_input", "after must be a cursor such as \"120-0\".")
    stored = await _load_reply(user, message_id)
    event_log = process.event_log()
    if event_log.is_local(stored.id) or stored.active:
        async for batch in event_log.follow(stored.id, cursor, idle):
            yield merged(batch) if batch else batch
        return
    yield _stored_entries(stored, cursor)


async def follow_sent(event: events.MessageEvent) -> AsyncIterator[list[Entry]]:
    """The reply a `send_message` just started, from its start: it is the sender's and its log is
    in this process, so `attach`'s database lookup would only repeat what the send did."""
    async for batch in process.event_log().follow(event["assistant_message"]["id"], (0, 0)):
        yield merged(batch)


def _stored_entries(stored: _StoredReply, cursor: tuple[int, int]) -> list[Entry]:
    out = []
    if cursor[0] < len(stored.text):
        out.append(Entry.of(events.delta(stored.id, len(stored.text), stored.text[cursor[0] :])))
    out.append(Entry.of(stored.final_event))
    return out


@database_sync_to_async
def _load_reply(user: User, message_id: object) -> _StoredReply:
    message = get_message_for(user, message_id)
    if message.role != Message.Role.ASSISTANT:
        raise ActionError("invalid_input", "Only replies can be attached to.")
    return _StoredReply(message.pk, message.role, message.is_active, final_event_of(message), message.content)


def final_event_of(message: Message) -> dict[str, Any]:
    """The final event of a finished message, rebuilt from the database."""
    offset = len(message.content)
    if message.status == Message.Status.FAILED:
        return dict(events.message_error(message.pk, offset, message.error_code or "provider_unavailable", message.error_text, None))
    return dict(
        events.done(
            message.pk, offset, message.status, message.prompt_tokens, message.completion_tokens,
            None, message.model_version or None, message.ttft_ms, message.duration_ms,
        )
    )
