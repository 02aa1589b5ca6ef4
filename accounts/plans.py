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


def effective_limits(user: User) -> EffectiveLimits:
    plan = user.plan if user.plan_id else Plan.default()
    override = PlanOverride.objects.filter(user=user).first()
    values: dict[str, object] = {}
    for field in Limits.LIMIT_FIELDS:
        own = getattr(override, field, None) if override is not None else None
        values[field] = own if own is not None else getattr(plan, field, None)
    allowed = _allowed(override) or _allowed(plan)
    return EffectiveLimits(plan=plan.name if plan else "", allowed_models=allowed, **values)  # type: ignore[arg-type]


def _allowed(limits: Limits | None) -> frozenset[int] | None:
    if limits is None or limits.pk is None:
        return None
    ids = frozenset(limits.allowed_models.values_list("pk", flat=True))
    return ids or None


# Plans and overrides change rarely and are read on every call: a call may see them up to
# PARLEY_LIMITS_CACHE_SECONDS late. Suspension and a change of plan are read fresh every time.
_cached: dict[int, tuple[float, int | None, EffectiveLimits]] = {}


def limits_for(user_id: int) -> tuple[bool, EffectiveLimits]:
    """(suspended, effective limits) of a user about to make a model call."""
    from parley import statements

    user = statements.select_one(User, {"id": user_id})  # the one fresh read: precompiled
    if not isinstance(user, User):
        return True, EffectiveLimits(plan="")  # a deleted user gets nothing
    now = time.monotonic()
    cached = _cached.get(user_id)
    if cached is not None and cached[0] > now and cached[1] == user.plan_id:
        return user.suspended, cached[2]
    limits = effective_limits(user)
    _cached[user_id] = (now + settings.PARLEY_LIMITS_CACHE_SECONDS, user.plan_id, limits)
    return user.suspended, limits


def forget_cached_limits() -> None:
    _cached.clear()
