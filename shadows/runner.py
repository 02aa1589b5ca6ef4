"""One shadow run, in a Celery worker: the real reply's request rebuilt from the stored
conversation, asked of the shadow model (or with the shadow's system prompt), stored beside the
real reply with its tokens, cost and timings, and billed to the site through billing/calls.

Nothing here writes to the reply's event log or the user's feeds, or changes the reply: the user
never sees a shadow. Idempotent: the (message, config) row is created `running` before the model
is asked, so a redelivered task finds it and does nothing.
"""

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone

from billing import calls
from billing.ledger import billed_tokens
from billing.models import UsageRecord
from chat import attachments, branches
from chat.actions import ActionError
from chat.history import Turn
from chat.models import Message, Upload
from providers.base import CollectedReply, ErrorCode, StreamError
from resilience.attempts import Attempt, Target, collect_once
from shadows.models import ShadowConfig, ShadowRun

logger = logging.getLogger(__name__)

# A run still `running` this long after it began, found by a redelivered task, was left by a lost
# worker: far beyond any call's timeouts, and well within the broker's visibility timeout (an hour),
# after which a task still unacknowledged is delivered again even to a live worker.
ABANDONED_AFTER_SECONDS = 15 * 60


def run_shadow(message_id: int, config_id: int) -> ShadowRun | None:
    """Make the shadow run of a complete reply for a config; None when there is nothing to do: the
    reply or the config is gone, the reply did not complete, or a run exists already (a redelivery)."""
    reply = Message.objects.select_related("conversation").filter(
        pk=message_id, role=Message.Role.ASSISTANT, status=Message.Status.COMPLETE
    ).first()
    config = ShadowConfig.objects.select_related("model", "shadow_model").filter(pk=config_id).first()
    if reply is None or config is None:
        return None
    model = config.model_to_try
    system = config.prompt_to_try(reply.conversation)
    run = _claim(reply, config, model.name, system)
    if run is None:
        return None
    try:
        if not model.is_offered:
            raise ActionError("unknown_model", f"{model.label} is not offered (disabled, unavailable or unconfigured).")
        turns, files = reply_turns(reply)
        attachments.check_model(model, files)
        admitted = calls.admit_for_site(
            model, system, turns, kind=UsageRecord.Kind.SHADOW, plan_max_output=_plan_max_output(reply),
            conversation_id=reply.conversation_id,
        ).for_message(reply.conversation_id, reply.pk)
    except ActionError as refused:
        return _end_uncalled(run, refused.code)
    return _save(run, admitted, _ask(admitted, system))


def reply_turns(reply: Message) -> tuple[list[Turn], list[Upload]]:
    """What the real reply was sent, from the stored conversation: the branch up to the user
    message it answers (a regenerate's and an edit's branch alike), that message's files and the
    earlier turns' text files (chat/attachments.py), before fitting to a model's window."""
    asked = Message.objects.filter(pk=reply.parent_id, conversation_id=reply.conversation_id).first()
    if asked is None:  # a reply of a conversation older than parents: its one branch in id order
        rows = list(reply.conversation.messages.filter(pk__lt=reply.pk).order_by("id").values_list("id", "role", "content", "status"))
        asked_row = next((row for row in reversed(rows) if row[1] == Message.Role.USER), None)
        if asked_row is None:
            raise ActionError("not_found", "The reply answers no message.")
        earlier = [row for row in rows if row[0] < asked_row[0]]
        asked = Message.objects.get(pk=asked_row[0])
    else:
        earlier = branches.path_rows(reply.conversation_id, asked.parent_id)
    files = list(asked.attachments.all())
    return attachments.turns(reply.conversation_id, earlier, asked.content, files), files


def _plan_max_output(reply: Message) -> int | None:
    """The plan's output cap the real reply was admitted under, so the shadow may say as much and no more."""
    value = (reply.limits or {}).get("max_output_tokens")
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _claim(reply: Message, config: ShadowConfig, model_name: str, system: str) -> ShadowRun | None:
    """The run's row, `running`, committed before the model is asked; None if it exists already."""
    try:
        with transaction.atomic():
            return ShadowRun.objects.create(message=reply, config=config, model=model_name, system_prompt_used=system)
    except IntegrityError:
        logger.info("Shadow of reply %s for config %s exists already: not asked again", reply.pk, config.pk)
        _end_if_abandoned(reply.pk, config.pk)
        return None


def _end_if_abandoned(message_id: int, config_id: int) -> None:
    """A task is delivered again when its worker was lost (tasks are acknowledged late): a run
    still `running` long after it began was that worker's, and nobody will finish it. It ends
    failed, `interrupted`, so the compare page does not wait on it; it is not asked again, and
    what the lost call used is unknown, so it has no ledger row."""
    abandoned_before = timezone.now() - timedelta(seconds=ABANDONED_AFTER_SECONDS)
    ShadowRun.objects.filter(
        message_id=message_id, config_id=config_id, status=ShadowRun.Status.RUNNING, created__lt=abandoned_before
    ).update(status=ShadowRun.Status.FAILED, error_code="interrupted", finished=timezone.now())


@dataclass(frozen=True, slots=True)
class Asked:
    """The shadow model's answer and its timings."""

    reply: CollectedReply
    ttft_ms: int | None
    duration_ms: int
    attempt: int = 1  # the provider attempt that answered (or failed last); 0: its breaker let none through
    failed_attempts: list[Attempt] = field(default_factory=list)  # retries before it, each its own ledger row


def _ask(admitted: calls.Admitted, system: str) -> Asked:
    """The provider call on an event loop of its own, through the attempts every call makes
    (resilience/attempts.py: retried before its first token, kept from a provider whose breaker is
    open; no failover: a shadow stands for one model): the adapters' timeouts apply, the output is
    cut at the admitted cap, and SDK objects stay in the adapter."""
    started = time.monotonic()
    try:
        reply, attempts = collect_once(Target.of(admitted, system))
    except Exception:  # a bug in an adapter must end the run as failed, not leave it running
        logger.exception("Shadow call to %s crashed", admitted.model.name)
        reply = CollectedReply(error=StreamError(ErrorCode.PROVIDER_UNAVAILABLE, "internal error"))
        return Asked(reply, None, int((time.monotonic() - started) * 1000))
    ttft = None if reply.first_text_at is None else int((reply.first_text_at - started) * 1000)
    return Asked(reply, ttft, int((time.monotonic() - started) * 1000), attempts.settled_attempt, attempts.separate_attempts)


def _save(run: ShadowRun, admitted: calls.Admitted, asked: Asked) -> ShadowRun:
    """The run's result and its one ledger row (kind shadow, no user: the site pays), in one
    transaction; the site's month counts the cost once it commits."""
    answer = asked.reply
    error_code = str(answer.error.code) if answer.error else ""
    outcome = ShadowRun.Status.FAILED if answer.error else ShadowRun.Status.COMPLETE
    reported = answer.usage
    reported_prompt = reported.prompt_tokens if reported else None
    reported_completion = reported.completion_tokens if reported else None
    call = admitted.call
    # The numbers the ledger row will have (billing/ledger.py), so that the run shows the same.
    prompt, completion, estimated = billed_tokens(call, outcome, reported_prompt, reported_completion, answer.text)
    result = {
        "text": answer.text, "status": outcome, "error_code": error_code[:40], "prompt_tokens": prompt,
        "completion_tokens": completion, "estimated": estimated, "cost_usd": call.pricing.cost(prompt, completion),
        "ttft_ms": asked.ttft_ms, "duration_ms": asked.duration_ms, "finished": timezone.now(),
    }
    with transaction.atomic():
        if not ShadowRun.objects.filter(pk=run.pk, status=ShadowRun.Status.RUNNING).update(**result):
            # The reply (and so its run) was deleted meanwhile: the tokens were spent all the same.
            call = dataclasses.replace(call, conversation_id=None, message_id=None)
        calls.settle(
            call, None, outcome, reported_prompt, reported_completion, answer.text, asked.duration_ms, error_code,
            attempt=asked.attempt, failed_attempts=asked.failed_attempts,
        )
    for name, value in result.items():
        setattr(run, name, value)
    return run


def _end_uncalled(run: ShadowRun, code: str) -> ShadowRun:
    """The shadow could not be asked (the model is not offered, cannot read the reply's images, the
    conversation does not fit its window, the site's budget is spent): failed, nothing billed."""
    logger.info("Shadow of reply %s for config %s not asked: %s", run.message_id, run.config_id, code)
    result = {"status": ShadowRun.Status.FAILED, "error_code": code[:40], "finished": timezone.now()}
    ShadowRun.objects.filter(pk=run.pk, status=ShadowRun.Status.RUNNING).update(**result)
    for name, value in result.items():
        setattr(run, name, value)
    return run
