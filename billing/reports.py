"""What the admins' usage page shows: the ledger summed per UTC day, per user and per model, and
the quota refusals Redis has counted.

Every figure is aggregated in the database, a fixed number of queries whatever the ledger's size.
"""

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

import redis
from django.db.models import Count, F, Q, QuerySet, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from accounts.models import User
from billing import quotas
from billing.models import UsageRecord


@dataclass(frozen=True, slots=True)
class DayTotal:
    day: date
    tokens: int
    cost: Decimal
    calls: int


@dataclass(frozen=True, slots=True)
class UserTotal:
    user_id: int
    username: str
    tokens: int
    cost: Decimal
    calls: int


@dataclass(frozen=True, slots=True)
class TokenTotal:
    """One API token's calls: the gateway's and the other protocol doors'."""

    token_id: int | None  # None: a token deleted since (its rows keep no link)
    name: str
    prefix: str
    user_id: int | None
    username: str
    calls: int
    tokens: int
    cost: Decimal


@dataclass(frozen=True, slots=True)
class ModelTotal:
    model: str
    calls: int
    tokens: int
    cost: Decimal
    share: float  # of the period's cost, in percent


@dataclass(frozen=True, slots=True)
class UsageReport:
    days: list[DayTotal]  # every day of the period, oldest first, days without usage included
    models: list[ModelTotal]

    @property
    def tokens(self) -> int:
        return sum(day.tokens for day in self.days)

    @property
    def cost(self) -> Decimal:
        return sum((day.cost for day in self.days), Decimal(0))

    @property
    def calls(self) -> int:
        return sum(day.calls for day in self.days)


@dataclass(frozen=True, slots=True)
class RefusalReport:
    """None when Redis could not be asked: the page says so rather than showing zeros."""

    per_day: list[tuple[date, int]]
    by_limit: list[tuple[str, int]]
    by_user: list[tuple[int, str, int]]  # user id, username, count

    @property
    def total(self) -> int:
        return sum(count for _, count in self.per_day)


def last_days(count: int = 30, today: date | None = None) -> list[date]:
    """The last `count` UTC days, today included, oldest first."""
    today = today or timezone.now().astimezone(UTC).date()
    return [today - timedelta(days=offset) for offset in range(count - 1, -1, -1)]


def _ledger(days: list[date], user_id: int | None) -> "QuerySet[UsageRecord]":
    start = datetime.combine(days[0], time.min, tzinfo=UTC)
    end = datetime.combine(days[-1] + timedelta(days=1), time.min, tzinfo=UTC)
    records = UsageRecord.objects.filter(created__gte=start, created__lt=end)
    return records if user_id is None else records.filter(user_id=user_id)


# Summing both columns in one expression keeps a single SUM per group on every backend.
_TOKENS = Sum(F("prompt_tokens") + F("completion_tokens"))


def usage_report(days: list[date], user_id: int | None = None) -> UsageReport:
    """Tokens, cost and calls per day and per model over `days`, for everyone or one user."""
    records = _ledger(days, user_id)
    per_day = {
        row["day"]: row
        for row in records.order_by().annotate(day=TruncDate("created", tzinfo=UTC))
        .values("day").annotate(tokens=_TOKENS, cost=Sum("cost_usd"), calls=Count("id"))
    }
    totals = [
        DayTotal(day, int(row["tokens"] or 0), Decimal(row["cost"] or 0), row["calls"])
        if (row := per_day.get(day)) else DayTotal(day, 0, Decimal(0), 0)
        for day in days
    ]
    by_model = list(
        records.order_by().values("model").annotate(tokens=_TOKENS, cost=Sum("cost_usd"), calls=Count("id"))
        .order_by("-cost", "-tokens", "model")
    )
    all_cost = sum((Decimal(row["cost"] or 0) for row in by_model), Decimal(0))
    models = [
        ModelTotal(row["model"], row["calls"], int(row["tokens"] or 0), Decimal(row["cost"] or 0),
                   float(Decimal(row["cost"] or 0) / all_cost * 100) if all_cost else 0.0)
        for row in by_model
    ]
    return UsageReport(totals, models)


def top_users(days: list[date], limit: int = 20) -> list[UserTotal]:
    """The users who cost the most over `days`, most first (the site's own calls, shadow runs, are no user's)."""
    rows = (
        _ledger(days, None).filter(user__isnull=False).order_by().values("user_id", "user__username")
        .annotate(tokens=_TOKENS, cost=Sum("cost_usd"), calls=Count("id"))
        .order_by("-cost", "-tokens", "user__username")[:limit]
    )
    return [UserTotal(row["user_id"], row["user__username"], int(row["tokens"] or 0), Decimal(row["cost"] or 0),
                      row["calls"]) for row in rows]


def by_token(days: list[date], user_id: int | None = None, limit: int = 50) -> list[TokenTotal]:
    """The calls made with API tokens over `days`, per token, costliest first; for everyone or one user.

    Deleted tokens' rows lose their link but keep their user: they are summed per user as one row."""
    rows = (
        _ledger(days, user_id).filter(Q(api_token__isnull=False) | Q(kind=UsageRecord.Kind.GATEWAY)).order_by()
        .values("api_token_id", "api_token__name", "api_token__prefix", "user_id", "user__username")
        .annotate(tokens=_TOKENS, cost=Sum("cost_usd"), calls=Count("id"))
        .order_by("-cost", "-tokens", "api_token__name", "api_token_id")[:limit]
    )
    return [
        TokenTotal(row["api_token_id"], row["api_token__name"] or "(deleted token)", row["api_token__prefix"] or "",
                   row["user_id"], row["user__username"] or "", row["calls"], int(row["tokens"] or 0),
                   Decimal(row["cost"] or 0))
        for row in rows
    ]


def refusal_report(days: list[date], user_id: int | None = None) -> RefusalReport | None:
    """Refused calls per day, per limit and per user; None if Redis cannot be reached."""
    keys = {day.strftime("%Y%m%d"): day for day in days}
    try:
        counts = quotas.refusal_counts(list(keys))
    except redis.RedisError:
        return None
    per_day = dict.fromkeys(days, 0)
    by_limit: dict[str, int] = {}
    by_user: dict[int, int] = {}
    for (day, refused_user, limit), count in counts.items():
        if user_id is not None and refused_user != user_id:
            continue
        per_day[keys[day]] += count
        by_limit[limit] = by_limit.get(limit, 0) + count
        by_user[refused_user] = by_user.get(refused_user, 0) + count
    names = dict(User.objects.filter(pk__in=by_user).values_list("pk", "username")) if by_user else {}
    return RefusalReport(
        per_day=list(per_day.items()),
        by_limit=sorted(by_limit.items(), key=lambda item: (-item[1], item[0])),
        # A user deleted since their refusals keeps a row, under their old id.
        by_user=sorted(((pk, names.get(pk, f"#{pk}"), count) for pk, count in by_user.items()),
                       key=lambda item: (-item[2], item[1])),
    )
