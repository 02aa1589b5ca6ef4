"""Per-user limits, checked and reserved atomically in Redis before any model call.

One Lua script checks every limit of a call and, only if all pass, counts the request and
reserves its tokens and cost: concurrent sends from any number of web processes can never admit
more than a limit, and budgets are reserved before the call (prompt plus max output) and settled
to the reported usage after it. Redis holds fast counters only; the usage ledger in the database
is the truth, and a counter Redis has lost is rebuilt from it before it is used again.
"""

import calendar
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from channels.db import database_sync_to_async
from django.conf import settings
from django.db.models import Sum
from redis import asyncio as aioredis

from accounts.plans import EffectiveLimits
from chat.models import Message, UsageRecord

MICRO_USD = Decimal(1_000_000)
# A reply that holds a concurrency slot longer than this is presumed dead (its process crashed).
SLOT_SECONDS = 15 * 60

# KEYS: requests-this-minute, requests-today, tokens-today, tokens-this-month, cost-this-month, active slots
# ARGV: now, then for each counter above: limit (-1: none), increment, ttl; then the slot limit, slot member, slot deadline
ADMIT = """
local now = tonumber(ARGV[1])
for i = 1, 5 do
  if redis.call('EXISTS', KEYS[i]) == 0 then return {'seed', i} end
end
redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', now)
local active = redis.call('ZCARD', KEYS[6])
local slot_limit = tonumber(ARGV[17])
if slot_limit >= 0 and active + 1 > slot_limit then return {'refused', 6, active, slot_limit} end
for i = 1, 5 do
  local limit = tonumber(ARGV[2 + (i - 1) * 3])
  local add = tonumber(ARGV[3 + (i - 1) * 3])
  local used = tonumber(redis.call('GET', KEYS[i]))
  if limit >= 0 and used + add > limit then return {'refused', i, used, limit} end
end
for i = 1, 5 do
  redis.call('INCRBY', KEYS[i], ARGV[3 + (i - 1) * 3])
end
redis.call('ZADD', KEYS[6], ARGV[19], ARGV[18])
redis.call('EXPIRE', KEYS[6], 86400)
return {'ok'}
"""

# KEYS: tokens-today, tokens-this-month, cost-this-month, active slots; ARGV: token change, cost change, slot member
SETTLE = """
for i = 1, 3 do
  if redis.call('EXISTS', KEYS[i]) == 1 then redis.call('INCRBY', KEYS[i], ARGV[i < 3 and 1 or 2]) end
end
redis.call('ZREM', KEYS[4], ARGV[3])
return 1
"""

COUNTERS = ("requests_per_minute", "requests_per_day", "tokens_per_day", "tokens_per_month", "cost_per_month")
LIMIT_NAMES = (*COUNTERS, "concurrent_replies")


@dataclass(frozen=True, slots=True)
class Windows:
    """The minute, day and month (UTC) a call falls in, and when each ends."""

    minute: str
    day: str
    month: str
    minute_ends: int
    day_ends: int
    month_ends: int

    @classmethod
    def at(cls, now: float) -> "Windows":
        moment = datetime.fromtimestamp(now, UTC)
        day_start = calendar.timegm(moment.replace(hour=0, minute=0, second=0, microsecond=0).timetuple())
        days_in_month = calendar.monthrange(moment.year, moment.month)[1]
        month_start = calendar.timegm(moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0).timetuple())
        return cls(
            minute=moment.strftime("%Y%m%d%H%M"), day=moment.strftime("%Y%m%d"), month=moment.strftime("%Y%m"),
            minute_ends=int(now // 60 * 60 + 60), day_ends=day_start + 86_400, month_ends=month_start + days_in_month * 86_400,
        )

    def ends(self) -> tuple[int, ...]:
        return (self.minute_ends, self.day_ends, self.day_ends, self.month_ends, self.month_ends, 0)


@dataclass(frozen=True, slots=True)
class Reservation:
    user_id: int
    member: str
    windows: Windows
    tokens: int
    cost_micro_usd: int


@dataclass(frozen=True, slots=True)
class Refusal:
    """Which limit refused the call, how much of it is left, and when it resets (0: when a reply ends)."""

    limit: str
    allowed: int
    used: int
    resets_at: int

    @property
    def remaining(self) -> int:
        return max(0, self.allowed - self.used)

    def retry_after(self, now: float) -> float:
        return max(1.0, self.resets_at - now) if self.resets_at else 2.0


# Given a user and the windows, the ledger's totals for the five counters, in COUNTERS order.
LedgerTotals = Callable[[int, Windows], Awaitable[tuple[int, int, int, int, int]]]


def _keys(user_id: int, windows: Windows) -> list[str]:
    base = f"{settings.PARLEY_KEY_PREFIX}:quota:{user_id}"
    return [f"{base}:rpm:{windows.minute}", f"{base}:rpd:{windows.day}", f"{base}:tok:{windows.day}",
            f"{base}:tok:{windows.month}", f"{base}:cost:{windows.month}", f"{base}:active"]


def _limit(value: int | Decimal | None, scale: Decimal | int = 1) -> int:
    return -1 if value is None else int(value * scale)


async def admit(
    redis: aioredis.Redis, user_id: int, limits: EffectiveLimits, tokens: int, cost_usd: Decimal, member: str,
    ledger_totals: LedgerTotals, now: float | None = None,
) -> Reservation | Refusal:
    """Count one model call and reserve its tokens and cost, or say which limit refuses it."""
    now = time.time() if now is None else now
    windows = Windows.at(now)
    keys = _keys(user_id, windows)
    cost_micro = int(cost_usd * MICRO_USD)
    increments = (1, 1, tokens, tokens, cost_micro)
    limit_values = (
        _limit(limits.requests_per_minute), _limit(limits.requests_per_day), _limit(limits.tokens_per_day),
        _limit(limits.tokens_per_month), _limit(limits.cost_per_month, MICRO_USD),
    )
    args: list[object] = [now]
    for limit, increment, ends in zip(limit_values, increments, windows.ends(), strict=False):
        args += [limit, increment, max(1, ends - int(now)) + 60]
    args += [_limit(limits.concurrent_replies), member, now + SLOT_SECONDS]
    for _ in range(3):
        result = await redis.eval(ADMIT, len(keys), *keys, *args)
        outcome = result[0].decode() if isinstance(result[0], bytes) else result[0]
        if outcome == "ok":
            return Reservation(user_id, member, windows, tokens, cost_micro)
        if outcome == "refused":
            index, used, allowed = int(result[1]) - 1, int(result[2]), int(result[3])
            return Refusal(LIMIT_NAMES[index], allowed, used, windows.ends()[index])
        await _seed(redis, keys, args, user_id, windows, ledger_totals)
    raise RuntimeError("quota counters could not be seeded")


async def _seed(
    redis: aioredis.Redis, keys: list[str], args: list[object], user_id: int, windows: Windows, ledger_totals: LedgerTotals
) -> None:
    """Counters Redis does not have (a new window, or lost data) start from the ledger, never from zero."""
    totals = await ledger_totals(user_id, windows)
    pipe = redis.pipeline(transaction=False)
    for index, (key, total) in enumerate(zip(keys[:5], totals, strict=True)):
        pipe.set(key, total, nx=True, ex=int(args[3 + index * 3]))  # type: ignore[arg-type]
    await pipe.execute()


async def settle(redis: aioredis.Redis, reservation: Reservation, tokens: int, cost_usd: Decimal) -> None:
    """The call ended: replace its reservation by what it used, and free its concurrency slot."""
    keys = _keys(reservation.user_id, reservation.windows)
    token_change = tokens - reservation.tokens
    cost_change = int(cost_usd * MICRO_USD) - reservation.cost_micro_usd
    await redis.eval(SETTLE, 4, keys[2], keys[3], keys[4], keys[5], token_change, cost_change, reservation.member)


@database_sync_to_async
def ledger_totals(user_id: int, windows: Windows) -> tuple[int, int, int, int, int]:
    """What the database says the user has used: sends (their messages) this minute and today, and
    the ledger's tokens today and this month and cost this month."""
    minute_start = datetime.fromtimestamp(windows.minute_ends - 60, UTC)
    day_start = datetime.fromtimestamp(windows.day_ends - 86_400, UTC)
    month_start = day_start.replace(day=1)
    sends = Message.objects.filter(conversation__owner_id=user_id, role=Message.Role.USER)
    ledger = UsageRecord.objects.filter(user_id=user_id)
    today = ledger.filter(created__gte=day_start).aggregate(p=Sum("prompt_tokens"), c=Sum("completion_tokens"))
    month = ledger.filter(created__gte=month_start).aggregate(
        p=Sum("prompt_tokens"), c=Sum("completion_tokens"), cost=Sum("cost_usd")
    )
    return (
        sends.filter(created__gte=minute_start).count(),
        sends.filter(created__gte=day_start).count(),
        (today["p"] or 0) + (today["c"] or 0),
        (month["p"] or 0) + (month["c"] or 0),
        int((month["cost"] or Decimal(0)) * MICRO_USD),
    )
