"""Runs one reply: provider events in, event log and a bounded number of database writes out.

A generation is an asyncio task of the web process that accepted the send. It never waits on a
client: clients only read the event log. Database writes per reply are fixed: at most
PARLEY_CHECKPOINTS_MAX checkpoints at doubling intervals (the first also turns `queued` into
`streaming`), and the final write. A reply shorter than the first interval writes once.
"""

import asyncio
import dataclasses
import functools
import logging
import time
from concurrent.futures import Future
from decimal import Decimal
from dataclasses import dataclass, field
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts.plans import EffectiveLimits
from billing import calls
from billing.ledger import Call, billed_tokens
from chat.actions import ActionError
from chat.enqueue import enqueue
from chat.history import Turn
from chat.models import ChatModel, Conversation, Message, usage_of
from observability import context as observed
from observability import logs, metrics, tracing
from parley import deferred, statements
from providers import get_provider
from providers.base import ErrorCode, Finish, Image, StreamError, TextDelta, ToolCall, Usage
from resilience import attempts, cache
from resilience.attempts import Target
from shadows import sampling
from streaming import events, process
from streaming.eventlog import EventLog, LocalLog
from streaming.process import Process

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Readmission:
    """What moving the call to another model of its failover chain needs (billing/calls.readmit)."""

    user_id: int
    limits: EffectiveLimits
    system: str
    turns: list[Turn]
    # A protocol door's call (gateway/) sends the client's own messages and options to every model
    # of the chain; None: the history `billing/calls.readmit` fits, as a chat reply sends.
    messages: list[dict[str, Any]] | None = None
    tools: tuple[dict[str, Any], ...] = ()
    options: dict[str, Any] = field(default_factory=dict)  # ChatRequest fields the client set (temperature, stop, ...)
    max_output: int | None = None  # the client's own cap on the output, kept on every model of the chain


@dataclass(frozen=True, slots=True)
class ReplyPlan:
    """Everything a generation needs, loaded before it starts so the token loop never hits the ORM."""

    message_id: int
    conversation_id: int
    target: Target  # the model admitted, its request, ledger call and reservation
    wants_title: bool  # the first exchange of a conversation that has no title yet
    chain: tuple[ChatModel, ...] = ()  # the model's failover chain, in order (resilience/attempts.py)
    readmission: Readmission | None = None
    notice: str = ""  # the reply's notice when it was stored (a fallback model, left-out turns)
    routing: dict[str, Any] = field(default_factory=dict)  # the reply's routing record when it was stored
    discard: bool = False  # a gateway call kept by nobody: its conversation is deleted once it has ended


@dataclass(slots=True)
class Outcome:
    started: float = field(default_factory=time.monotonic)
    first_token_at: float | None = None
    usage: Usage | None = None
    finish: Finish | None = None
    error: StreamError | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    status: str = Message.Status.COMPLETE
    run: attempts.Run | None = None
    shutting_down: bool = False

    def ms_since_start(self, moment: float | None) -> int | None:
        return None if moment is None else int((moment - self.started) * 1000)


def start(here: Process, plan: ReplyPlan) -> asyncio.Task[None]:
    """Start a generation; the caller has already taken one of the process's slots for it."""
    log = here.event_log.open_log(plan.message_id)
    # A fresh context: the request that started the reply ends long before it, and its
    # thread-sensitive executor with it; the reply's database calls must not be bound to it.
    # Only the request id, user and trace context come along (observability/context.py).
    return here.slots.run(_run(here, log, plan), name=f"parley-reply-{plan.message_id}", context=observed.fresh())


async def _run(here: Process, log: LocalLog, plan: ReplyPlan) -> None:
    # One span per reply, never one per token: the provider calls it makes are its children.
    attributes = {"parley.message_id": plan.message_id, "parley.conversation_id": plan.conversation_id,
                  "gen_ai.request.model": plan.target.request.model, "parley.model": plan.target.model.name}
    with tracing.span("parley.reply", attributes) as span:
        outcome = await _generate(here, log, plan)
        if span.is_recording():
            span.set_attribute("parley.reply.status", str(outcome.status))
            if outcome.error is not None:
                tracing.fail(span, str(outcome.error.code))
    if outcome.shutting_down:
        raise asyncio.CancelledError


async def _generate(here: Process, log: LocalLog, plan: ReplyPlan) -> "Outcome":
    await here.event_log.clear(plan.message_id)
    outcome = Outcome()
    # A reply kept by nobody (an unkept gateway call) is never checkpointed: its text is not to be
    # written, and if its process dies the reaper bills it from its event log all the same.
    checkpoints = _Checkpoints(plan.message_id, log, most=0 if plan.discard else settings.PARLEY_CHECKPOINTS_MAX)
    pump = asyncio.create_task(_pump(here.event_log, plan, log, outcome, checkpoints))
    log.on_stop = pump.cancel
    if log.stop_requested:
        pump.cancel()
    shutting_down = False
    try:
        await pump
    except asyncio.CancelledError:
        current = asyncio.current_task()
        shutting_down = current is not None and current.cancelling() > 0
        outcome.status = Message.Status.INTERRUPTED if shutting_down else Message.Status.STOPPED
    except Exception:
        logger.exception("Reply %s crashed", plan.message_id)
        outcome.error = StreamError(ErrorCode.PROVIDER_UNAVAILABLE, "internal error")
    try:
        await checkpoints.wait()
        if outcome.error is not None and outcome.status == Message.Status.COMPLETE:
            outcome.status = Message.Status.FAILED
        final_event = await _finalize(plan, log.text(), log.offset, outcome)
        log.finish(final_event)
    finally:
        here.event_log.close_log(log)
        here.slots.give_back()
    outcome.shutting_down = shutting_down
    return outcome


async def _pump(event_log: EventLog, plan: ReplyPlan, log: LocalLog, outcome: Outcome, checkpoints: "_Checkpoints") -> None:
    readmit = None if plan.readmission is None or not plan.chain else functools.partial(_readmit, plan, plan.readmission)
    run = outcome.run = attempts.Run(plan.target, plan.chain, readmit, cache_client=event_log.redis)
    buffers = get_provider(plan.target.model.provider).buffers_unread_events
    async for event in run.events():
        if isinstance(event, TextDelta):
            if outcome.first_token_at is None:
                outcome.first_token_at = time.monotonic()
                checkpoints.ttft_ms = outcome.ms_since_start(outcome.first_token_at)
            log.append(event.text)
            checkpoints.maybe_save()
            if buffers:
                # Read once per flush window, not once per token: the same text makes the same flush.
                await event_log.next_flush()
        elif isinstance(event, Usage):
            outcome.usage = event
        elif isinstance(event, Finish):
            outcome.finish = event
        elif isinstance(event, StreamError):
            outcome.error = event
        elif isinstance(event, ToolCall):  # only a call that offered tools (a protocol door's) gets one
            outcome.tool_calls.append(event)
        elif isinstance(event, attempts.Switched):
            buffers = get_provider(event.target.model.provider).buffers_unread_events


@database_sync_to_async
def _readmit(plan: ReplyPlan, readmission: Readmission, model: ChatModel, previous: Target) -> Target:
    """Move the reply to the next model of its chain (before its first token): admitted again at
    that model's price, and the reply's row says which model and reservation it now has, for the
    reaper should this process die."""
    if not model.is_offered:
        raise ActionError("unknown_model")
    if not model.supports_vision and any(isinstance(part, Image) for turn in readmission.turns if len(turn) > 2 for part in turn[2]):
        raise ActionError("model_cannot_see_images")
    admitted = calls.readmit(
        readmission.user_id, readmission.limits, previous.reservation, model, readmission.system, readmission.turns,
        kind=previous.call.kind, conversation_id=plan.conversation_id, message_id=plan.message_id,
        max_output=readmission.max_output,
    )
    statements.update(
        Message, plan.message_id,
        {"provider": model.provider, "model": model.name, "quota_claim": admitted.reservation.claim(admitted.call.prompt_estimate)},
        only_if=("status", Message.ACTIVE),
    )
    call = dataclasses.replace(admitted.call, api_token_id=previous.call.api_token_id)
    target = Target.of(dataclasses.replace(admitted, call=call), readmission.system, readmission.messages, readmission.tools)
    return target.with_options(readmission.options)


class _Checkpoints:
    """Saves the partial text at doubling intervals, in the background, never more than a fixed count."""

    def __init__(self, message_id: int, log: LocalLog, most: int) -> None:
        self.message_id = message_id
        self.log = log
        self.interval = settings.PARLEY_CHECKPOINT_FIRST_SECONDS
        self.next_at = time.monotonic() + self.interval
        self.remaining = most
        self.ttft_ms: int | None = None
        self.task: asyncio.Task[None] | None = None

    def maybe_save(self) -> None:
        if self.remaining <= 0 or time.monotonic() < self.next_at or self._busy():
            return
        self.remaining -= 1
        self.interval *= 2
        self.next_at = time.monotonic() + self.interval
        self._spawn(_save_checkpoint(self.message_id, self.log.text(), self.ttft_ms))

    def _busy(self) -> bool:
        return self.task is not None and not self.task.done()

    def _spawn(self, coroutine: object) -> None:
        previous = self.task

        async def after_previous() -> None:
            if previous is not None:
                await asyncio.shield(previous)
            await coroutine  # type: ignore[misc]

        self.task = asyncio.create_task(after_previous())

    async def wait(self) -> None:
        if self.task is not None:
            try:
                await asyncio.shield(self.task)
            except Exception:
                logger.exception("A checkpoint of reply %s failed", self.message_id)


@database_sync_to_async
def _save_checkpoint(message_id: int, text: str, ttft_ms: int | None) -> None:
    statements.update(
        Message, message_id, {"content": text, "status": Message.Status.STREAMING, "ttft_ms": ttft_ms},
        only_if=("status", Message.ACTIVE),
    )


async def _finalize(plan: ReplyPlan, text: str, offset: int, outcome: Outcome) -> events.DoneEvent | events.ErrorEvent:
    usage = outcome.usage or Usage(None, None)
    finish = outcome.finish
    ttft_ms = outcome.ms_since_start(outcome.first_token_at)
    duration_ms = outcome.ms_since_start(time.monotonic())
    error = outcome.error if outcome.status == Message.Status.FAILED else None
    run = outcome.run or attempts.Run(plan.target)
    answered = Answered.of(plan, run)
    billed = Billed.of(run.target.call, outcome.status, usage, text)
    tool_calls = [{"id": call.call_id, "name": call.name, "arguments": call.arguments} for call in outcome.tool_calls]
    settled = await _save_final(
        plan, run, answered, text, outcome.status, usage, billed, finish, error, ttft_ms, duration_ms, tool_calls,
    )
    # A gateway call its token keeps no text of (`discard`) is hashed even while the switch is on.
    logger.info(
        "Reply %s %s on %s: %s prompt and %s output tokens; text %s", plan.message_id, outcome.status,
        answered.model.name, billed.prompt_tokens, billed.completion_tokens,
        logs.digest(text) if plan.discard else logs.text(text),
    )
    metrics.reply_ended(answered.model.name, outcome.status, ttft_ms, duration_ms)
    if settled is not None:
        # A client that reads the meter on the final event must find this reply settled. The
        # settle runs on the deferred threads (parley/deferred.py): only this reply waits for it.
        await asyncio.wrap_future(settled)
    # The cache keeps text: a reply that called tools is not one it could give again.
    complete = outcome.status == Message.Status.COMPLETE and not outcome.tool_calls
    if complete and run.cached is None and cache.eligible(run.target.model, run.target.request):
        await cache.store(
            process.event_log().redis, cache.key_of(run.target.model, run.target.request), text, finish, ttft_ms, duration_ms,
        )
    if error is not None:
        return events.message_error(
            plan.message_id, offset, error.code, error.plain_words, error.retry_after, **answered.fields(),
        )
    return events.done(
        plan.message_id,
        offset,
        outcome.status,
        billed.prompt_tokens,
        billed.completion_tokens,
        finish.reason if finish else None,
        finish.model_version if finish else None,
        ttft_ms,
        duration_ms,
        billed.estimated,
        usage_of(billed.prompt_tokens, billed.completion_tokens, billed.estimated, billed.cost)["cost_usd"],
        **answered.fields(),
        tool_calls=tool_calls or None,
    )


@dataclass(frozen=True, slots=True)
class Answered:
    """Which model answered a reply, and how it came to: its notice and routing record as stored."""

    model: ChatModel
    notice: str
    routing: dict[str, Any]

    @classmethod
    def of(cls, plan: ReplyPlan, run: attempts.Run) -> "Answered":
        routing = {**plan.routing, **run.routing()}
        notice = plan.notice
        failover = routing.get("failover")
        if failover:
            because = f"because {failover['from_label']} was unavailable: {failover['why']}."
            said = f"Answered by {failover['to_label']} {because}" if run.delivered else f"{failover['to_label']} was tried {because}"
            notice = " ".join(filter(None, (said, notice)))
        return cls(run.target.model, notice, routing)

    def fields(self) -> dict[str, Any]:
        """What the final event says of it, so that a page drawing the reply live can show it."""
        return {"model": self.model.name, "notice": self.notice or None, "routing": self.routing or None}


@dataclass(frozen=True, slots=True)
class Billed:
    """A reply's tokens and cost as its ledger row will have them, known before the final write so
    that the reply's row and its `done` event carry them too."""

    prompt_tokens: int
    completion_tokens: int
    estimated: bool
    cost: Decimal | None  # None: the model's price is unknown (its ledger row bills 0, flagged)

    @classmethod
    def of(cls, call: Call, status: str, usage: Usage, text: str) -> "Billed":
        prompt, completion, estimated = billed_tokens(call, status, usage.prompt_tokens, usage.completion_tokens, text)
        cost = call.pricing.cost(prompt, completion) if call.pricing.known else None
        return cls(prompt, completion, estimated, cost)


@database_sync_to_async
def _save_final(
    plan: ReplyPlan,
    run: attempts.Run,
    answered: Answered,
    text: str,
    status: str,
    usage: Usage,
    billed: Billed,
    finish: Finish | None,
    error: StreamError | None,
    ttft_ms: int | None,
    duration_ms: int | None,
    tool_calls: list[dict[str, str]],
) -> Future[None] | None:
    """The final write and the call's ledger row, in one transaction; returns the settlement of
    the call's reservation, which runs after the commit."""
    final_state = {
        "content": text,
        "status": status,
        "error_code": str(error.code) if error else "",
        "error_text": error.plain_words if error else "",
        "model_version": (finish.model_version if finish else "")[:100],
        "prompt_tokens": billed.prompt_tokens,
        "completion_tokens": billed.completion_tokens,
        "tokens_estimated": billed.estimated,
        "cost_usd": billed.cost,
        "ttft_ms": ttft_ms,
        "duration_ms": duration_ms,
        "last_cursor": events.cursor_for(len(text), 1),
        "finished": timezone.now(),
        "provider": answered.model.provider,
        "model": answered.model.name,
        "notice": answered.notice,
        "routing": answered.routing,
        "tool_calls": tool_calls,
    }
    with transaction.atomic():
        call = run.target.call
        if plan.discard:
            # Kept by nobody: the reply's text is never written, its row goes once this commits.
            deferred.after_commit(lambda: discard(plan.conversation_id), "discard of a gateway call")
        elif not statements.update(Message, plan.message_id, final_state, only_if=("status", Message.ACTIVE)):
            if Message.objects.filter(pk=plan.message_id).exists():
                # Ended meanwhile by the reaper, which took this process for dead (its heartbeat
                # was lost with Redis's data, say): it kept the text and charged the call. A second
                # ledger row, or a settle of a reservation already settled, would bill it twice.
                logger.warning("Reply %s was ended by the reaper while it ran; its end is left as it is", plan.message_id)
                return None
            # The conversation was deleted while the reply ran; the tokens were spent all the same.
            call = dataclasses.replace(call, conversation_id=None, message_id=None)
        settled = calls.settle(
            call, run.target.reservation, status, usage.prompt_tokens, usage.completion_tokens, text, duration_ms,
            str(error.code) if error else "", attempt=run.settled_attempt, failed_attempts=run.separate_attempts,
        )
        if plan.wants_title and status == Message.Status.COMPLETE:
            # The task itself skips a conversation the user has named meanwhile. Nothing waits for
            # the publish: the title reaches the page as a notice whenever the worker has it.
            deferred.after_commit(
                lambda: enqueue("generate_title", plan.conversation_id, why_it_matters="no title"), "title request"
            )
        # A sampled share of a shadowed model's complete replies is asked again on the worker, never
        # shown; not a reply that is not kept, which it could not read.
        if not plan.discard:
            sampling.after_final_write(plan.message_id, call.model, status)
    return settled.done if settled is not None else None


def discard(conversation_id: int) -> None:
    """A gateway call whose token stores nothing, ended: its conversation goes (its messages with
    it); its ledger rows stay, with the token that made it."""
    Conversation.objects.filter(pk=conversation_id, discard_when_done=True).delete()
