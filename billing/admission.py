"""The plan's side of a model call, and what is left of the plan.

The pieces billing.calls (the one call path) puts together, in the words of a refusal: the allowed
models, the fallback model past a share of the monthly cost, the reservation in billing.quotas (the
counters in Redis), its release or settlement; and the chat page's meter.
"""

import dataclasses
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

import redis
from django.conf import settings

from accounts.plans import EffectiveLimits, limits_for
from billing import alerts, quotas
from billing.ledger import Pricing
from billing.quotas import Refusal, Reservation, Windows
from chat.actions import ActionError
from chat.models import ChatModel
from parley import deferred
from providers import AUTO

logger = logging.getLogger(__name__)


# The user's cost counter as this process last saw it (admitting or settling one of their calls):
# the fallback model's threshold is checked against a reading at most this old, which spares the
# sends of an active user a round trip. The budget itself is enforced by the admission script.
COST_SEEN_SECONDS = 10.0
_cost_seen: dict[int, tuple[float, str, int]] = {}


def _saw_cost(user_id: int, month: str, micro_usd: int) -> None:
    _cost_seen[user_id] = (time.monotonic() + COST_SEEN_SECONDS, month, micro_usd)


def forget_seen_costs() -> None:
    _cost_seen.clear()


def cost_used(user_id: int, now: float | None = None) -> Decimal:
    """The user's cost this month so far (reservations of running calls included), as read in
    the last COST_SEEN_SECONDS."""
    now = time.time() if now is None else now
    windows = Windows.at(now)
    seen = _cost_seen.get(user_id)
    if seen is not None and seen[0] > time.monotonic() and seen[1] == windows.month:
        return Decimal(seen[2]) / quotas.MICRO_USD
    keys = quotas.keys_of(user_id, windows)
    value = quotas.client().get(keys[4])
    if value is None:  # rebuilt here, as the reservation that follows would do
        quotas.seed(quotas.client(), user_id, windows, quotas.ledger_totals, now)
        value = quotas.client().get(keys[4])
    _saw_cost(user_id, windows.month, int(value or 0))
    return Decimal(int(value or 0)) / quotas.MICRO_USD


def usage_for(user_id: int) -> dict[str, object]:
    """What the chat page's meter shows: the user's plan and their use of each limited counter."""
    suspended, limits = limits_for(user_id)
    now = time.time()
    return {
        "plan": limits.plan,
        "suspended": suspended,
        "allowances": [a.as_dict(now) for a in allowances(user_id, limits, now) if a.allowed is not None],
    }


@dataclass(frozen=True, slots=True)
class Allowance:
    """One budget of a user as the page's meter shows it: None allowed means no limit."""

    name: str
    used: float
    allowed: float | None
    resets_at: int

    def as_dict(self, now: float) -> dict[str, object]:
        return {
            "name": self.name, "unit": quotas.UNITS[self.name], "used": self.used, "allowed": self.allowed,
            "label": None if self.allowed is None else quotas.limit_label(self.name, self.allowed),
            "resets_at": datetime.fromtimestamp(self.resets_at, UTC).isoformat(),
            "resets_in": max(0, round(self.resets_at - now)),
        }


def allowances(user_id: int, limits: EffectiveLimits, now: float | None = None) -> list[Allowance]:
    """What the user has used of each limited counter (in the current windows, rebuilt if lost)."""
    now = time.time() if now is None else now
    windows = Windows.at(now)
    keys = quotas.keys_of(user_id, windows)[:5]
    values = quotas.client().mget(keys)
    if values[4] is None:  # as the admission script reads them: lost (or a new month), so from the ledger
        values = list(quotas.ledger_totals(user_id, windows))
    values = [value or 0 for value in values]  # a window that has just begun
    allowed = (limits.requests_per_minute, limits.requests_per_day, limits.tokens_per_day,
               limits.tokens_per_month, limits.cost_per_month)
    out = []
    for name, value, limit, ends in zip(quotas.COUNTERS, values, allowed, windows.ends(), strict=False):
        used = max(0, int(value))
        if name == "cost_per_month":
            out.append(Allowance(name, float(used / quotas.MICRO_USD), None if limit is None else float(limit), ends))
        else:
            out.append(Allowance(name, used, None if limit is None else int(limit), ends))
    return out


def check_model(limits: EffectiveLimits, model: ChatModel) -> None:
    if limits.allowed_models is not None and model.pk not in limits.allowed_models:
        raise ActionError("model_not_allowed", f"Your plan does not include {model.label}. Pick another model.")


def reserve(
    user_id: int, limits: EffectiveLimits, pricing: Pricing, prompt_tokens: int, max_output: int, background: bool = False,
    again: bool = False,
) -> Reservation:
    """Admit a call, reserving its prompt and its most output, or refuse it with quota_exceeded.

    A `background` call (a title) spends from the token and cost budgets but is not one of the
    user's requests or replies: it counts toward no request limit and takes no reply slot. A call
    admitted `again` (moved to another model of its failover chain, its first reservation given
    back) takes its reply slot again but is the same request: it counts toward no request limit.
    """
    now = time.time()
    if background:
        limits = dataclasses.replace(limits, requests_per_minute=None, requests_per_day=None, concurrent_replies=None)
    elif again:
        limits = dataclasses.replace(limits, requests_per_minute=None, requests_per_day=None)
    tokens = prompt_tokens + max_output
    try:
        result = quotas.admit(
            quotas.client(), user_id, limits, tokens, pricing.cost(prompt_tokens, max_output), uuid.uuid4().hex, now=now,
            requests=0 if background or again else 1,
        )
    except redis.RedisError as error:
        raise _unavailable(user_id, error) from error
    if isinstance(result, Refusal):
        raise ActionError("quota_exceeded", result.describe(now), result.retry_after(now), limit=result.as_dict(now))
    _saw_cost(user_id, result.windows.month, result.month_cost_micro_usd)
    return result


def fallback_for(user_id: int, limits: EffectiveLimits, model: ChatModel) -> tuple[ChatModel, str]:
    """The model that should reply, and a notice when it is not the one asked for: past the plan's
    share of its monthly cost budget, the plan's cheaper fallback model replies instead of a refusal."""
    if limits.fallback_model_id is None or limits.cost_per_month is None or limits.fallback_model_id == model.pk:
        return model, ""
    percent = limits.fallback_at_percent if limits.fallback_at_percent is not None else 100
    try:
        used = cost_used(user_id)
    except redis.RedisError as error:
        raise _unavailable(user_id, error) from error
    if used < limits.cost_per_month * percent / 100:
        return model, ""
    fallback = _fallback_model(limits)
    if fallback is None:
        return model, ""
    share = round(used / limits.cost_per_month * 100) if limits.cost_per_month else 100
    return fallback, (
        f"You have used {share} % of this month's budget, so {fallback.label} answers instead of {model.label}"
        f" until it renews on {_renewal()}."
    )


def fallback_when_refused(limits: EffectiveLimits, model: ChatModel, refused: ActionError) -> tuple[ChatModel, str] | None:
    """When what is left of the month's budget cannot cover a reply from the chosen model (its most
    output reserved), the fallback model answers instead, if the plan has one."""
    if refused.code != "quota_exceeded" or (refused.limit or {}).get("name") != "cost_per_month":
        return None
    if limits.fallback_model_id is None or limits.fallback_model_id == model.pk:
        return None
    fallback = _fallback_model(limits)
    if fallback is None:
        return None
    return fallback, (
        f"What is left of this month's budget cannot cover a reply from {model.label}, so {fallback.label}"
        f" answers instead until it renews on {_renewal()}."
    )


def fell_back(user_id: int, refused: ActionError) -> None:
    """The fallback model was admitted where the chosen one was refused: that was no refusal."""
    try:
        quotas.uncount_refusal(quotas.client(), user_id, refused.limit["name"], time.time())  # type: ignore[index]
    except redis.RedisError:
        logger.warning("Could not take back the refusal count of user %s", user_id, exc_info=True)


def _fallback_model(limits: EffectiveLimits) -> ChatModel | None:
    """The plan's fallback model, if it can be called: one nobody can call would only turn a reply into an error."""
    # Not `auto` either: a fallback is called as it is, and auto is never called (routing/router.py).
    fallback = ChatModel.objects.filter(pk=limits.fallback_model_id, enabled=True).exclude(provider=AUTO).first()
    return fallback if fallback is not None and fallback.is_offered else None


def _renewal() -> str:
    renews = datetime.fromtimestamp(Windows.at(time.time()).month_ends, UTC)
    return f"{renews:%B} {renews.day}"


def _unavailable(user_id: int, error: redis.RedisError) -> ActionError:
    # Without its counters no call may start: it would be counted against no limit.
    logger.warning("Limits of user %s could not be checked: %s", user_id, error)
    return ActionError("busy", "Usage limits cannot be checked right now. Try again in a few seconds.", 5.0)


def release(reservation: Reservation) -> None:
    """The call never started: give back its budget and its slot (the request still counts)."""
    quotas.settle(quotas.client(), reservation, 0, Decimal(0))


def site_budget_spent() -> bool:
    """Whether the site has spent its monthly budget (PARLEY_SITE_BUDGET_USD; never without one):
    calls the site pays for itself (shadow runs) stop there. Raises redis.RedisError."""
    budget = settings.PARLEY_SITE_BUDGET_USD
    if budget is None:
        return False
    return quotas.site_cost(quotas.client(), Windows.at(time.time())) >= int(budget * quotas.MICRO_USD)


def settle_site_call(windows: Windows, cost_usd: Decimal) -> None:
    """After the ledger has a call the site pays for, as deferred work: its cost counts toward the
    site's month (and its cost alerts), never toward any user's counters."""
    try:
        site = quotas.settle_site(quotas.client(), windows, cost_usd)
        if site is None and settings.PARLEY_SITE_BUDGET_USD is not None:
            site = quotas.site_cost(quotas.client(), windows)  # seeded from the ledger, which has this call
    except redis.RedisError:
        logger.warning("Could not count a site call's cost toward the site's month", exc_info=True)
        return
    if cost_usd > 0:
        deferred.soon(lambda: alerts.after_charge(None, windows.month, None, -1, site), "site cost-alert check")


def settle_call(reservation: Reservation | None, tokens: int, cost_usd: Decimal) -> None:
    """After the ledger has the call, as deferred work (parley/deferred.py); a Redis hiccup here
    must not fail the reply (the ledger is the truth)."""
    if reservation is None:
        return
    try:
        user_cost, site = quotas.settle(quotas.client(), reservation, tokens, cost_usd)
        if user_cost is not None:
            _saw_cost(reservation.user_id, reservation.windows.month, user_cost)
        if site is None and settings.PARLEY_SITE_BUDGET_USD is not None:
            site = quotas.site_cost(quotas.client(), reservation.windows)  # once a month, or after Redis lost it
    except redis.RedisError:
        logger.warning("Could not settle the quota reservation of user %s", reservation.user_id, exc_info=True)
        return
    if cost_usd > 0:
        month, budget = reservation.windows.month, reservation.cost_budget_micro_usd
        # A job of its own: a reply's final event waits for this settle, never for a broker.
        deferred.soon(lambda: alerts.after_charge(reservation.user_id, month, user_cost, budget, site), "cost-alert check")
