"""One model call's accounting, the same for every caller: admit, then the caller runs the
provider, then settle.

- `admit`: the plan's allowed models, its fallback model past a share of the monthly budget, the
  history that fits the model's context, the prices, and the reservation of the prompt and the most
  output under every limit, falling back to the cheaper model when only the budget refuses.
- `settle`: the ledger row in the caller's transaction, and the reservation settled to it once
  that commits, off the shared database thread (cost alerts follow from there).

- `admit_for_site`: a call the site pays for itself (a shadow run, shadows/runner.py): fitted and
  priced like any other, but no user's limits, counters or reservation; refused only once the
  site's monthly budget (PARLEY_SITE_BUDGET_USD) is spent. Its `settle` writes the ledger row with
  no user and counts its cost toward the site's month alone.

Replies (chat/replies.py, chat/generation.py), titles (chat/titles.py), the charge of a reply
whose process died (chat/reaper.py) and shadow runs all go through here, so a call is never
counted or billed another way.
"""

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Protocol

from django.conf import settings
from django.db import IntegrityError, transaction
from redis import RedisError

from accounts.plans import EffectiveLimits
from billing import admission, ledger
from billing.models import UsageRecord
from billing.quotas import Reservation, Windows
from chat.actions import ActionError
from chat.history import DoesNotFit, FittedHistory, Turn, fit_history
from chat.models import ChatModel
from observability import metrics, tracing
from parley import deferred

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Admitted:
    """A call that may run: the model that answers (maybe the plan's fallback, with a notice saying
    so), what it is sent, its reservation, and what the ledger records when it ends."""

    model: ChatModel
    notice: str
    fitted: FittedHistory
    max_output: int
    reservation: Reservation | None  # None: a call the site pays for reserves nothing
    call: ledger.Call

    def for_message(self, conversation_id: int, message_id: int) -> "Admitted":
        return dataclasses.replace(self, call=dataclasses.replace(self.call, conversation_id=conversation_id, message_id=message_id))


def admit(
    user_id: int, limits: EffectiveLimits, model: ChatModel, system: str, turns: list[Turn], *,
    kind: str, max_output: int | None = None, background: bool = False, conversation_id: int | None = None,
) -> Admitted:
    """Admit a call or raise ActionError. A `background` call (a title) keeps the chosen model and
    counts toward no request limit; `max_output` caps the output below the model's and the plan's."""
    try:
        return _traced("admit", kind, model, lambda: _admit(
            user_id, limits, model, system, turns, kind=kind, max_output=max_output, background=background,
            conversation_id=conversation_id,
        ))
    except ActionError as refused:
        metrics.admission_refused(refused.code, (refused.limit or {}).get("name") if refused.code == "quota_exceeded" else None)
        raise


def _traced(how: str, kind: str, model: ChatModel, admit_it: Callable[[], Admitted]) -> Admitted:
    """An admission in its span (observability/tracing.py): what was asked for and what was
    admitted, or the refusal's code."""
    with tracing.span("parley.admission", {"parley.admission": how, "parley.call.kind": kind, "gen_ai.request.model": model.model_id}) as span:
        try:
            admitted = admit_it()
        except ActionError as refused:
            tracing.fail(span, refused.code)
            raise
        if span.is_recording():
            span.set_attributes({
                "parley.model": admitted.model.name, "parley.fallback": admitted.model.pk != model.pk,
                "parley.prompt_estimate": admitted.call.prompt_estimate, "parley.max_output": admitted.max_output,
            })
        return admitted


def _admit(
    user_id: int, limits: EffectiveLimits, model: ChatModel, system: str, turns: list[Turn], *,
    kind: str, max_output: int | None, background: bool, conversation_id: int | None,
) -> Admitted:
    admission.check_model(limits, model)
    notice = ""
    if not background:
        model, notice = admission.fallback_for(user_id, limits, model)
    shape = _Shape.of(model, system, turns, limits.max_output_tokens, max_output)
    # Last of the checks, since it counts the request; a transaction that fails after it gives it back.
    try:
        reservation = admission.reserve(user_id, limits, shape.pricing, shape.prompt_estimate, shape.max_output, background)
    except ActionError as refused:
        fallback = None if background else admission.fallback_when_refused(limits, model, refused)
        if fallback is None:
            raise
        model, notice = fallback
        shape = _Shape.of(model, system, turns, limits.max_output_tokens, max_output)
        reservation = admission.reserve(user_id, limits, shape.pricing, shape.prompt_estimate, shape.max_output, background)
        admission.fell_back(user_id, refused)
    call = ledger.Call(
        user_id=user_id, kind=kind, provider=model.provider, model=model.name, pricing=shape.pricing,
        prompt_estimate=shape.prompt_estimate, conversation_id=conversation_id, reserved_output=shape.max_output,
        endpoint=model.endpoint,
    )
    return Admitted(model, notice, shape.fitted, shape.max_output, reservation, call)


def readmit(
    user_id: int, limits: EffectiveLimits, previous: Reservation | None, model: ChatModel, system: str, turns: list[Turn],
    *, kind: str, conversation_id: int | None, message_id: int | None, background: bool = False,
    max_output: int | None = None,
) -> Admitted:
    """The same call moved to another model of its failover chain before its first token: the
    plan must allow that model, the history is fitted to its context window and the call reserved
    again at its price; the first reservation is given back (nothing was produced). Not another
    request: it counts toward no request limit. Raises ActionError when the model cannot take it."""
    return _traced("readmit", kind, model, lambda: _readmit(
        user_id, limits, previous, model, system, turns, kind=kind, conversation_id=conversation_id, message_id=message_id,
        background=background, max_output=max_output,
    ))


def _readmit(
    user_id: int, limits: EffectiveLimits, previous: Reservation | None, model: ChatModel, system: str, turns: list[Turn],
    *, kind: str, conversation_id: int | None, message_id: int | None, background: bool, max_output: int | None,
) -> Admitted:
    admission.check_model(limits, model)
    shape = _Shape.of(model, system, turns, limits.max_output_tokens, max_output)
    if previous is not None:
        admission.release(previous)
    reservation = admission.reserve(
        user_id, limits, shape.pricing, shape.prompt_estimate, shape.max_output, background=background, again=True
    )
    call = ledger.Call(
        user_id=user_id, kind=kind, provider=model.provider, model=model.name, pricing=shape.pricing,
        prompt_estimate=shape.prompt_estimate, conversation_id=conversation_id, message_id=message_id,
        reserved_output=shape.max_output, endpoint=model.endpoint,
    )
    return Admitted(model, "", shape.fitted, shape.max_output, reservation, call)


def admit_for_site(
    model: ChatModel, system: str, turns: list[Turn], *, kind: str, plan_max_output: int | None = None,
    conversation_id: int | None = None,
) -> Admitted:
    """Admit a call the site pays for, or raise ActionError: the model's context window and output
    cap (and `plan_max_output`, the cap the call it stands beside had) as for any call, no user's
    limits or counters. Refused once the site's monthly budget is spent."""
    return _traced("site", kind, model, lambda: _admit_for_site(
        model, system, turns, kind=kind, plan_max_output=plan_max_output, conversation_id=conversation_id,
    ))


def _admit_for_site(
    model: ChatModel, system: str, turns: list[Turn], *, kind: str, plan_max_output: int | None,
    conversation_id: int | None,
) -> Admitted:
    try:
        spent = admission.site_budget_spent()
    except RedisError:
        raise ActionError("busy", "The site's spending cannot be checked right now.", 5.0) from None
    if spent:
        raise ActionError("quota_exceeded", "The site's monthly budget (PARLEY_SITE_BUDGET_USD) is spent.")
    shape = _Shape.of(model, system, turns, plan_max_output, None)
    call = ledger.Call(
        user_id=None, kind=kind, provider=model.provider, model=model.name, pricing=shape.pricing,
        prompt_estimate=shape.prompt_estimate, conversation_id=conversation_id, reserved_output=shape.max_output,
        endpoint=model.endpoint,
    )
    return Admitted(model, "", shape.fitted, shape.max_output, None, call)


def release(admitted: Admitted) -> None:
    """The call never ran: its budget and slot go back (the request still counts)."""
    if admitted.reservation is not None:
        admission.release(admitted.reservation)


class FailedAttempt(Protocol):
    """An attempt that failed before its first token (resilience/attempts.py `Attempt`)."""

    @property
    def number(self) -> int: ...
    @property
    def code(self) -> str: ...
    @property
    def duration_ms(self) -> int: ...
    @property
    def call(self) -> ledger.Call: ...


@dataclass(frozen=True, slots=True)
class Settled:
    """A call's ledger row, and its reservation's settlement: done once the counters have it."""

    entry: UsageRecord
    done: Future[None]


def settle(
    call: ledger.Call, reservation: Reservation | None, outcome: str, prompt_tokens: int | None,
    completion_tokens: int | None, text: str, duration_ms: int | None, error_code: str = "", *, attempt: int = 1,
    failed_attempts: Sequence[FailedAttempt] = (),
) -> Settled | None:
    """Record the call in the ledger, inside the caller's transaction, and settle its reservation to
    that row once the transaction commits (parley/deferred.py); a call the site pays for (no user)
    counts toward the site's month alone. None when the user is gone: nobody is left to charge.

    `attempt` is the number of the provider attempt that answered (or failed last); each of
    `failed_attempts` (retries and failovers that came to nothing before their first token) gets
    a row of its own, billed nothing: the provider produced nothing."""
    try:
        with transaction.atomic():
            for failed in failed_attempts:
                ledger.record(failed.call, "failed", None, None, "", failed.duration_ms, failed.code, attempt=failed.number)
            entry = ledger.record(call, outcome, prompt_tokens, completion_tokens, text, duration_ms, error_code, attempt=attempt)
    except IntegrityError:
        logger.info("A %s call ended after user %s was deleted; no usage recorded", call.kind, call.user_id)
        return None
    if call.user_id is None:
        windows = Windows.at(time.time())
        done = deferred.after_commit(lambda: admission.settle_site_call(windows, entry.cost_usd), "site call's cost")
        return Settled(entry, done)
    done = deferred.after_commit(
        lambda: admission.settle_call(reservation, entry.total_tokens, entry.cost_usd), "settle of a call's reservation"
    )
    return Settled(entry, done)


@dataclass(frozen=True, slots=True)
class _Shape:
    """What a call to one model would send and could cost: the history that fits, the most output,
    the prompt's estimated tokens and the prices."""

    fitted: FittedHistory
    max_output: int
    prompt_estimate: int
    pricing: ledger.Pricing

    @classmethod
    def of(
        cls, model: ChatModel, system: str, turns: list[Turn], plan_max_output: int | None, cap: int | None
    ) -> "_Shape":
        max_output = min(model.max_output_tokens, settings.PARLEY_MAX_OUTPUT_TOKENS, plan_max_output or 10**9, cap or 10**9)
        try:
            fitted = fit_history(turns, system, model.context_window, max_output)
        except DoesNotFit as too_long:
            raise ActionError(
                "context_too_long",
                f"This message is too long for the model's context window: it needs about {too_long.needs:,} tokens "
                f"(attached files included), and {model.label} has room for {too_long.room:,}.",
            ) from None
        pricing = ledger.Pricing.of(model.input_price_per_million, model.output_price_per_million)
        return cls(fitted, max_output, fitted.prompt_estimate, pricing)
