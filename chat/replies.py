"""Sending, stopping and attaching to replies: the actions behind every transport.

These run on the event loop. Each does its database work in one short thread hop and keeps the
rest (admission, cursors, event log) in memory, so a send costs a few milliseconds of CPU.
"""

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import OperationalError, transaction
from django.utils import timezone

from accounts.models import User
from accounts.plans import limits_for
from billing import calls
from billing.models import UsageRecord
from chat import attachments, branches, generation, presets, reaper
from chat.actions import ActionError, create_conversation, get_message_for, parse_pk, resolve_model
from chat.models import Conversation, Message, Upload, usage_of
from chat.titles import fallback_title
from observability import logs
from parley import statements
from parley.redis_clients import sync_client
from resilience import chains
from resilience.attempts import Target
from routing import router
from streaming import events, process
from streaming.entries import Entry, merged

logger = logging.getLogger(__name__)

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


@dataclass(frozen=True, slots=True)
class Turn:
    """What one model call stores before it runs: a send (a new user message at the end of the
    branch shown), an edit (a new version of a user message: its sibling) or a regenerate (a new
    version of a reply, after the same user message). Each stores a queued reply and shows its branch."""

    conversation_id: object = None  # a send's conversation; None starts one
    text: str | None = None  # the new user message; None for a regenerate
    model_name: str | None = None
    edits: object = None  # the id of the user message an edit is a version of
    regenerates: object = None  # the id of the reply a regenerate is a version of
    file_ids: tuple[int, ...] = ()  # files of the conversation a send carries (chat/attachments.py)


async def send_message(
    user: User, conversation_id: object, content: object, model_name: object = None, origin: str = "",
    attachment_ids: object = None,
) -> events.MessageEvent:
    """Store the user's message and a queued reply, start generating it, and return the `message` event.

    The user's other tabs are told too (all but `origin`, the socket that sent it), so they can follow.
    `attachment_ids`: files of the conversation the message carries (chat/attachments.py).
    """
    text = clean_content(content)
    file_ids = attachments.parse_ids(attachment_ids)
    if model_name is not None and not isinstance(model_name, str):
        raise ActionError("invalid_input", "model must be a model name.")
    turn = Turn(conversation_id=conversation_id, text=text, model_name=model_name or None, file_ids=file_ids)
    return await _start(user, turn, origin)


async def edit_message(user: User, message_id: object, content: object, origin: str = "") -> events.MessageEvent:
    """A new version of one of the user's messages, with a reply to it: a branch, shown from now on."""
    text = clean_content(content)
    return await _start(user, Turn(text=text, edits=message_id), origin)


async def regenerate_message(user: User, message_id: object, origin: str = "") -> events.MessageEvent:
    """A new reply in place of a finished one (a retry of a failed, stopped or interrupted one
    too): a branch, shown from now on, and a new call, billed as such."""
    return await _start(user, Turn(regenerates=message_id), origin)


async def _start(user: User, turn: Turn, origin: str) -> events.MessageEvent:
    return await start_stored(user, lambda generator_id: _store_turn(user, turn, generator_id), origin)


async def start_stored(
    user: User, store: Callable[[str], Awaitable[StoredTurn]], origin: str = "", announce: bool = True,
) -> events.MessageEvent:
    """Take a generation slot, `store` the turn (given this process's generator id), start its reply
    and, when `announce`, tell the user's tabs: the one way every door (chat, gateway/) starts a reply."""
    here = process.current()
    # Taken before the await so that concurrent sends cannot overshoot the bound.
    if not here.slots.take(settings.PARLEY_MAX_GENERATIONS):
        raise ActionError("busy", retry_after=BUSY_RETRY_AFTER)
    try:
        stored = await store(here.event_log.generator_id)
    except OperationalError as error:
        here.slots.give_back()
        if "locked" not in str(error):
            raise
        # SQLite takes one writer at a time; past its busy timeout, say "busy" rather than fail.
        raise ActionError("busy", retry_after=BUSY_RETRY_AFTER) from error
    except BaseException:
        here.slots.give_back()
        raise
    generation.start(here, stored.plan)
    if announce:
        await here.feeds.publish(user.pk, {**stored.event, "origin": origin})
    return stored.event


@dataclass(slots=True)
class _Place:
    """Where a turn goes: its conversation (locked), the history before it, and the parent of the
    new user message (or, for a regenerate, the user message the new reply answers)."""

    conversation: Conversation
    earlier: list[tuple[Any, ...]]  # (id, role, content, status) of the path before the turn
    parent_id: int | None
    answered: Message | None = None  # a regenerate's user message
    created: bool = False  # a new conversation (its owner row was not read with it)
    edited: bool = False
    carried: list[Upload] = field(default_factory=list)  # the files of the message this is a version of

    @property
    def shows_branch(self) -> bool:
        """Whether the conversation shows a branch of its tree (and so stores the new leaf)."""
        return self.answered is not None or self.edited or self.conversation.current_leaf_id is not None


def _locked_conversation(user: User, conversation_id: object) -> Conversation:
    # The owner's row comes along, fresh: suspension and plan, without another query.
    found = statements.select_one(
        Conversation, {"id": parse_pk(conversation_id), "owner": user.pk}, related=("model", "owner"), lock=True
    )
    if found is None:
        raise ActionError("not_found")
    return cast(Conversation, found)


def _place(user: User, turn: Turn) -> _Place:
    """Where the turn goes, checked: the user's own conversation or message, of the right role, and
    no reply under way in the conversation."""
    if turn.edits is None and turn.regenerates is None:
        return _place_send(user, turn)
    return _place_version(user, turn)


def _place_send(user: User, turn: Turn) -> _Place:
    """A send goes at the end of the branch shown."""
    if turn.conversation_id is None:
        return _Place(create_conversation(user, turn.model_name), [], None, created=True)
    conversation = _locked_conversation(user, turn.conversation_id)
    if turn.model_name and turn.model_name != conversation.model.name:
        conversation.model = resolve_model(turn.model_name)
    if branches.is_branched(conversation):
        _check_idle(conversation)
        earlier = branches.path_rows(conversation.pk, conversation.current_leaf_id)
    else:  # one branch: every message, in id order, the busy check included
        earlier = statements.values_by(Message, ("id", "role", "content", "status"), "conversation", conversation.pk)
        if any(status in Message.ACTIVE for _, _, _, status in earlier):
            raise ActionError("conversation_busy")
    return _Place(conversation, earlier, earlier[-1][0] if earlier else None)


def _check_idle(conversation: Conversation) -> None:
    if Message.objects.filter(conversation=conversation, status__in=Message.ACTIVE).exists():
        raise ActionError("conversation_busy")


def _place_version(user: User, turn: Turn) -> _Place:
    """An edit goes beside the user message it edits; a regenerate beside its reply."""
    editing = turn.edits is not None
    message = get_message_for(user, turn.edits if editing else turn.regenerates)
    if editing and message.role != Message.Role.USER:
        raise ActionError("invalid_input", "Only your own messages can be edited; regenerate a reply instead.")
    if not editing and message.role != Message.Role.ASSISTANT:
        raise ActionError("invalid_input", "Only replies can be regenerated; edit a message of yours instead.")
    conversation = _locked_conversation(user, message.conversation_id)
    _check_idle(conversation)
    branches.make_branched(conversation)
    parent_id = Message.objects.filter(pk=message.pk).values_list("parent_id", flat=True).get()  # maybe just given
    earlier = branches.path_rows(conversation.pk, parent_id)
    if editing:
        return _Place(conversation, earlier, parent_id, edited=True, carried=list(message.attachments.all()))
    answered = statements.select_one(Message, {"id": parent_id}) if parent_id is not None else None
    if not isinstance(answered, Message) or answered.role != Message.Role.USER:
        raise ActionError("invalid_input", "This reply answers no message of yours, so it cannot be regenerated.")
    return _Place(conversation, earlier, parent_id, answered, carried=list(answered.attachments.all()))


@database_sync_to_async
def _store_turn(user: User, turn: Turn, generator_id: str) -> StoredTurn:
    """The one place a turn is stored, whatever made it: checks, `calls.admit`, the messages, and
    the branch shown, in one transaction; then the plan of the reply."""
    admitted: calls.Admitted | None = None
    try:
        with transaction.atomic():
            place = _place(user, turn)
            conversation = place.conversation
            chosen = conversation.model
            if not chosen.is_offered:
                raise ActionError("unknown_model", f"The model {chosen.name!r} is no longer offered. Pick another one.")
            suspended, limits = limits_for(user.pk, None if place.created else conversation.owner)
            if suspended:
                raise ActionError("suspended")
            if place.answered is None:  # a send's files, or an edit's: the edited message's and any named
                files = place.carried + [
                    upload for upload in attachments.resolve(conversation.pk, turn.file_ids) if upload not in place.carried
                ]
                earlier, text = place.earlier, turn.text
            else:  # a regenerate asks again with the answered message as it was sent, its files included
                files, earlier, text = place.carried, place.earlier[:-1], place.answered.content
            attachments.check_model(chosen, files)  # before admission: a refused send counts no request
            turns = attachments.turns(conversation.pk, earlier, text, files)
            system = presets.resolve_system(conversation)  # a following conversation gets its preset's current text
            routed = router.choose(user.pk, limits, text, files, turns, system.text) if chosen.is_auto else None
            admitted = calls.admit(
                user.pk, limits, routed.model if routed else chosen, system.text, turns, kind=UsageRecord.Kind.REPLY,
                conversation_id=conversation.pk,
            )
            model = admitted.model
            attachments.check_model(model, files)  # the plan's fallback model may not read images
            now = timezone.now()
            if place.answered is None:
                user_message = Message(
                    conversation=conversation, parent_id=place.parent_id,
                    role=Message.Role.USER, content=turn.text, status=Message.Status.COMPLETE, created=now,
                )
                statements.insert(user_message)
                attachments.link(user_message, files)
            else:
                user_message = place.answered
            reply = Message(
                conversation=conversation, parent=user_message, role=Message.Role.ASSISTANT,
                status=Message.Status.QUEUED, provider=model.provider, model=model.name,
                notice=" ".join(filter(None, (admitted.notice, admitted.fitted.notice))), generator=generator_id,
                quota_claim=admitted.reservation.claim(admitted.call.prompt_estimate), created=now,
                limits=limits.applied(),
            )
            reply.routing.update(system.routing())
            if routed is not None:  # the conversation keeps `auto`; the reply says what it chose and why
                reply.routing.update(routed.record())
            statements.insert(reply)
            conversation.updated = now
            changes: dict[str, Any] = {"updated": now, "model": conversation.model_id}
            changes.update(system.follow(conversation))  # the version this reply got, when it moved
            if place.shows_branch:
                changes["current_leaf"] = reply.pk  # the new branch is the one shown
            first_words = (
                not place.earlier and turn.edits is None and turn.text is not None
                and conversation.title_is_auto and not conversation.title
            )
            if first_words:  # named at once by its question; its model may find a better title later
                conversation.title = changes["title"] = fallback_title(turn.text, model.is_demo)
            statements.update(Conversation, conversation.pk, changes)
            user_dict = user_message.as_dict(branches.sibling_ids(conversation.pk, user_message.parent_id) if place.shows_branch else None)
            reply_dict = reply.as_dict(branches.sibling_ids(conversation.pk, user_message.pk) if place.answered else None)
    except BaseException:
        if admitted is not None:  # nothing was stored: the request and its reservation are given back
            calls.release(admitted)
        raise
    admitted = admitted.for_message(conversation.pk, reply.pk)
    logger.info(
        "Message %s in conversation %s: reply %s queued on %s; text %s",
        user_message.pk, conversation.pk, reply.pk, model.name, logs.text(text or ""),
    )
    plan = generation.ReplyPlan(
        message_id=reply.pk,
        conversation_id=conversation.pk,
        target=Target.of(admitted, system.text),
        wants_title=first_words,  # the demo's task keeps the question's words (chat/titles.py)
        chain=chains.chain_of(model),
        readmission=generation.Readmission(user.pk, limits, system.text, turns),
        notice=reply.notice,
        routing=reply.routing,
    )
    event = events.message_started(conversation.as_dict(), user_dict, reply_dict)
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
    answered = {"model": message.model or None, "notice": message.notice or None, "routing": message.routing or None}
    if message.status == Message.Status.FAILED:
        return dict(events.message_error(
            message.pk, offset, message.error_code or "provider_unavailable", message.error_text, None, **answered,
        ))
    return dict(
        events.done(
            message.pk, offset, message.status, message.prompt_tokens, message.completion_tokens,
            None, message.model_version or None, message.ttft_ms, message.duration_ms,
            message.tokens_estimated, usage_of(None, None, False, message.cost_usd)["cost_usd"], **answered,
        )
    )
