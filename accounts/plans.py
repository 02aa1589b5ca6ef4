"""A user's effective limits: their plan (or the default plan) with their own overrides on top."""

import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.conf import settings

from accounts.models import Limits, Plan, PlanOverride, User

# The plans a new installation starts with; admins change them in Django admin.
# name: requests/minute, requests/day, concurrent replies, tokens/day, tokens/month, USD/month, max output, default
SEEDED_PLANS = {
    "Free": (10, 300, 2, 200_000, 2_000_000, Decimal("2.00"), 2048, True),
    "Pro": (60, 3_000, 5, 2_000_000, 40_000_000, Decimal("50.00"), 8192, False),
    "Staff": (None, None, 10, None, None, None, None, False),
}


def seed_plans(plan_class: Any) -> None:
    for name, (rpm, rpd, concurrent, per_day, per_month, cost, max_output, default) in SEEDED_PLANS.items():
        plan_class.objects.get_or_create(
            name=name,
            defaults={
                "requests_per_minute": rpm,
                "requests_per_day": rpd,
                "concurrent_replies": concurrent,
                "tokens_per_day": per_day,
                "tokens_per_month": per_month,
                "cost_per_month": cost,
                "max_output_tokens": max_output,
                "is_default": default,
            },
        )


@dataclass(frozen=True, slots=True)
class EffectiveLimits:
    """None means no limit; `allowed_models` None means every offered model."""

    plan: str
    requests_per_minute: int | None = None
    requests_per_day: int | None = None
    concurrent_replies: int | None = None
    tokens_per_day: int | None = None
    tokens_per_month: int | None = None
    cost_per_month: Decimal | None = None
    max_output_tokens: int | None = None
    allowed_models: frozenset[int] | None = None
    fallback_model_id: int | None = None
    fallback_at_percent: int | None = None
    run_max_steps: int | None = None
    run_max_seconds: int | None = None
    run_max_tokens: int | None = None
    run_max_cost: Decimal | None = None

    def applied(self) -> dict[str, Any]:
        """The plan's name and the reply limits that are set, as JSON: what a reply records as the
        limits it was admitted under, for support to read later whatever the plan has become."""
        applied: dict[str, Any] = {"plan": self.plan}
        for name in REPLY_LIMITS:
            value = getattr(self, name)
            if value is not None:
                applied[name] = str(value) if isinstance(value, Decimal) else value
        if self.allowed_models is not None:
            applied["allowed_models"] = len(self.allowed_models)
        return applied


REPLY_LIMITS = (
    "requests_per_minute", "requests_per_day", "concurrent_replies", "tokens_per_day", "tokens_per_month",
    "cost_per_month", "max_output_tokens", "fallback_at_percent",
)


def effective_limits(user: User) -> EffectiveLimits:
    """The ORM way, for admin pages and tests; model calls use limits_for."""
    plan = user.plan if user.plan_id else Plan.default()
    override = PlanOverride.objects.filter(user=user).first()
    return _combine(_limits_of(plan), _limits_of(override), plan.name if plan else "")


_NO_VALUES: tuple[dict[str, Any], frozenset[int] | None] = ({}, None)


def _limits_of(limits: Limits | None) -> tuple[dict[str, Any], frozenset[int] | None]:
    """A plan's or an override's limit fields and its allowed models (None: not restricted)."""
    if limits is None or limits.pk is None:
        return _NO_VALUES
    ids = frozenset(limits.allowed_models.values_list("pk", flat=True))
    return {field: getattr(limits, field) for field in Limits.LIMIT_FIELDS}, ids or None


def _combine(
    plan: tuple[dict[str, Any], frozenset[int] | None], override: tuple[dict[str, Any], frozenset[int] | None], name: str
) -> EffectiveLimits:
    values = {field: override[0].get(field) if override[0].get(field) is not None else plan[0].get(field)
              for field in Limits.LIMIT_FIELDS}
    return EffectiveLimits(plan=name, allowed_models=override[1] or plan[1], **values)


# Plans and overrides change rarely and are read on every model call: a process may apply an
# admin's edit up to PARLEY_LIMITS_CACHE_SECONDS late. Plans are cached by plan (there are few, so
# a cache miss is rare whatever the number of users); overrides by user. Suspension and a change of
# plan are read fresh on every call, with the one query a call makes here.
_plans: dict[int | None, tuple[float, str, tuple[dict[str, Any], frozenset[int] | None]]] = {}
_overrides: dict[int, tuple[float, tuple[dict[str, Any], frozenset[int] | None]]] = {}


def limits_for(user_id: int, fresh_user: User | None = None) -> tuple[bool, EffectiveLimits]:
    """(suspended, effective limits) of a user about to make a model call. `fresh_user`: the user's
    row as just read in the caller's transaction, which spares reading it again."""
    from parley import statements

    user = fresh_user or statements.select_one(User, {"id": user_id})  # the one fresh read: precompiled
    if not isinstance(user, User):
        return True, EffectiveLimits(plan="")  # a deleted user gets nothing
    now = time.monotonic()
    cached_plan = _plans.get(user.plan_id)
    if cached_plan is None or cached_plan[0] <= now:
        plan = Plan.objects.filter(pk=user.plan_id).first() if user.plan_id else Plan.default()
        cached_plan = _plans[user.plan_id] = (
            now + settings.PARLEY_LIMITS_CACHE_SECONDS, plan.name if plan else "", _limits_of(plan),
        )
    cached_override = _overrides.get(user_id)
    if cached_override is None or cached_override[0] <= now:
        override = statements.select_one(PlanOverride, {"user": user_id})
        cached_override = _overrides[user_id] = (now + settings.PARLEY_LIMITS_CACHE_SECONDS, _limits_of(override))
    return user.suspended, _combine(cached_plan[2], cached_override[1], cached_plan[1])


def forget_cached_limits() -> None:
    _plans.clear()
    _overrides.clear()
