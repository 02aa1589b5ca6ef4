"""Per-user limits, checked and reserved atomically in Redis before any model call.

These run where the database work of a call runs (the send's transaction on the database thread,
the final write, a Celery task), with a plain Redis client: one round trip each.

One Lua script checks every limit of a call and, only if all pass, counts the request and
reserves its tokens and cost: concurrent sends from any number of web processes can never admit
more than a limit, and budgets are reserved before the call (prompt plus max output) and settled
to the reported usage after it. Redis holds fast counters only; the usage ledger in the database
is the truth, and a counter Redis has lost is rebuilt from it before it is used again.
"""

import calendar
import functools
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import redis
from django.conf import settings
from django.db.models import Sum

from accounts.models import CounterReset, User
from accounts.plans import EffectiveLimits
from billing.models import UsageRecord
from chat.models import Message
from parley.redis_clients import is_cluster, sync_client

logger = logging.getLogger(__name__)

MICRO_USD = Decimal(1_000_000)
# A reply that holds a concurrency slot longer than this is presumed dead (its process crashed).
SLOT_SECONDS = 15 * 60

# KEYS: requests-this-minute, requests-today, tokens-today, tokens-this-month, cost-this-month, active slots
#       (all of one user, so in one cluster slot: their hash tag is the user id), then on one server
#       today's refusals (a hash of "user:limit" to a count, for the admins' usage page; a cluster
#       keeps it in another slot, so there the caller counts a refusal itself)
# ARGV[1]: numbers separated by spaces (one argument packs far faster than twenty): now, the slot
#          limit (-1: none), the slot's deadline, the user id, then for each of the five counters
#          above its limit (-1: none), increment and time to live; ARGV[2]: the slot member
ADMIT = """
local w = {}
for word in string.gmatch(ARGV[1], '%S+') do w[#w + 1] = word end
local now, slot_limit = tonumber(w[1]), tonumber(w[2])
local function refuse(index, used, limit)
  if KEYS[7] then
    redis.call('HINCRBY', KEYS[7], w[4] .. ':' .. index, 1)
    redis.call('EXPIRE', KEYS[7], 40 * 86400)
  end
  return {'refused', index, used, limit}
end
-- The month's cost counter stands for all of the user's counters: with it present, a missing
-- minute or day counter is a new window and starts at zero; without it, Redis lost them (or the
-- month is new) and every counter is rebuilt from the ledger first.
if redis.call('EXISTS', KEYS[5]) == 0 then return {'seed', 5} end
for i = 1, 4 do
  if redis.call('EXISTS', KEYS[i]) == 0 then redis.call('SET', KEYS[i], 0, 'EX', w[4 + i * 3]) end
end
redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', now)
local active = redis.call('ZCARD', KEYS[6])
if slot_limit >= 0 and active + 1 > slot_limit then return refuse(6, active, slot_limit) end
for i = 1, 5 do
  local limit, add = tonumber(w[2 + i * 3]), tonumber(w[3 + i * 3])
  local used = tonumber(redis.call('GET', KEYS[i]))
  -- a free call (a zero-priced model's cost) is never refused by a budget it does not spend
  if limit >= 0 and add > 0 and used + add > limit then return refuse(i, used, limit) end
end
for i = 1, 5 do
  redis.call('INCRBY', KEYS[i], w[3 + i * 3])
end
if slot_limit >= 0 then
  redis.call('ZADD', KEYS[6], w[3], ARGV[2])
  redis.call('EXPIRE', KEYS[6], 86400)
end
return {'ok', redis.call('GET', KEYS[5])}
"""

# KEYS: tokens-today, tokens-this-month, cost-this-month, active slots (one user's, one slot)
# ARGV: token change, cost change, slot member
# Returns the user's cost this month after the call (-1: not counted), for the cost alerts. The
# site's counter is another slot on a cluster, so SETTLE_SITE counts the call there after this.
SETTLE = """
for i = 1, 3 do
  if redis.call('EXISTS', KEYS[i]) == 1 then redis.call('INCRBY', KEYS[i], ARGV[i < 3 and 1 or 2]) end
end
redis.call('ZREM', KEYS[4], ARGV[3])
return tonumber(redis.call('GET', KEYS[3]) or '-1')
"""

# KEYS: the site's cost this month; ARGV: the call's cost. A call the site pays for (a shadow run)
# counts there alone. Returns the site's cost after it (-1: not counted, Redis has no counter).
SETTLE_SITE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('INCRBY', KEYS[1], ARGV[1]) end
return -1
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
        return _windows_of_minute(int(now // 60))

    @classmethod
    def of_minute(cls, minute: int) -> "Windows":
        now = minute * 60
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

    def starts(self) -> tuple[datetime, datetime, datetime]:
        """When the minute, the day and the month began."""
        day = datetime.fromtimestamp(self.day_ends - 86_400, UTC)
        return datetime.fromtimestamp(self.minute_ends - 60, UTC), day, day.replace(day=1)


@functools.lru_cache(maxsize=8)
def _windows_of_minute(minute: int) -> Windows:
    """Every call of a minute falls in the same windows: worked out once (dates cost 40 µs here)."""
    return Windows.of_minute(minute)


@dataclass(frozen=True, slots=True)
class Reservation:
    user_id: int
    member: str
    windows: Windows
    tokens: int
    cost_micro_usd: int
    cost_budget_micro_usd: int = -1  # the user's monthly cost limit when the call was admitted (-1: none)
    month_cost_micro_usd: int = 0  # the user's cost this month once the call was admitted

    def claim(self, prompt_estimate: int) -> str:
        """The reservation as text stored with the reply, to settle it even if this process dies."""
        return (f"{self.member} {self.windows.minute_ends} {self.tokens} {self.cost_micro_usd} {prompt_estimate}"
                f" {self.cost_budget_micro_usd}")

    @classmethod
    def from_claim(cls, user_id: int, claim: str) -> "tuple[Reservation, int] | None":
        """(reservation, prompt estimate) from a claim, or None for an empty or damaged one."""
        try:
            member, minute_ends, tokens, cost, prompt, budget = claim.split()
            windows = Windows.at(int(minute_ends) - 60)
            return cls(user_id, member, windows, int(tokens), int(cost), int(budget)), int(prompt)
        except ValueError:
            return None


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

    def as_dict(self, now: float) -> dict[str, object]:
        """What clients get in the error event and body: the limit, what is left, and when it resets."""
        scale = MICRO_USD if self.limit == "cost_per_month" else 1
        return {
            "name": self.limit,
            "label": limit_label(self.limit, self.allowed / scale if scale != 1 else self.allowed),
            "unit": UNITS[self.limit],
            "allowed": float(self.allowed / scale) if scale != 1 else self.allowed,
            "remaining": float(self.remaining / scale) if scale != 1 else self.remaining,
            "resets_at": datetime.fromtimestamp(self.resets_at, UTC).isoformat() if self.resets_at else None,
            "resets_in": max(0, round(self.resets_at - now)) if self.resets_at else None,
        }

    def describe(self, now: float) -> str:
        allowed = self.allowed / MICRO_USD if self.limit == "cost_per_month" else self.allowed
        when = f"It resets in {_duration(self.resets_at - now)}." if self.resets_at else "Wait for a reply to finish."
        return f"You have reached your plan's limit of {limit_label(self.limit, allowed)}. {when}"


def limit_label(name: str, allowed: float | Decimal) -> str:
    """'10 messages a minute', '$2.00 of model use a month'."""
    if name == "cost_per_month":
        return f"${allowed:,.2f} {LABELS[name]}"
    label = LABELS[name]
    if allowed == 1:  # "1 message a minute", "1 reply at a time"
        label = label.replace("messages", "message").replace("tokens", "token").replace("replies", "reply")
    return f"{int(allowed):,} {label}"


UNITS = {"requests_per_minute": "requests", "requests_per_day": "requests", "tokens_per_day": "tokens",
         "tokens_per_month": "tokens", "cost_per_month": "usd", "concurrent_replies": "replies"}
LABELS = {"requests_per_minute": "messages a minute", "requests_per_day": "messages a day",
          "tokens_per_day": "tokens a day", "tokens_per_month": "tokens a month",
          "cost_per_month": "of model use a month", "concurrent_replies": "replies at a time"}


def _duration(seconds: float) -> str:
    seconds = max(1, round(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{round(seconds / 60)} min"
    if seconds < 172_800:
        return f"{round(seconds / 3600)} h"
    return f"{round(seconds / 86_400)} days"


# Given a user and the windows, the ledger's totals for the five counters, in COUNTERS order.
LedgerTotals = Callable[[int, Windows], tuple[int, int, int, int, int]]

# This process's shared client, with bounded waits: these calls run on the database thread.
client = sync_client


def user_base(user_id: int) -> str:
    """What every counter of one user starts with; `{id}` is its hash tag, so that on a Redis
    Cluster the admission and settle scripts find all of them in one slot."""
    return f"{settings.PARLEY_KEY_PREFIX}:quota:{{{user_id}}}"


def keys_of(user_id: int, windows: Windows) -> list[str]:
    base = user_base(user_id)
    return [f"{base}:rpm:{windows.minute}", f"{base}:rpd:{windows.day}", f"{base}:tok:{windows.day}",
            f"{base}:tok:{windows.month}", f"{base}:cost:{windows.month}", f"{base}:active"]


def refusals_key(day: str) -> str:
    return f"{settings.PARLEY_KEY_PREFIX}:quota:refusals:{day}"


def _limit(value: int | Decimal | None, scale: Decimal | int = 1) -> int:
    return -1 if value is None else int(value * scale)


def admit(
    redis_client: redis.Redis, user_id: int, limits: EffectiveLimits, tokens: int, cost_usd: Decimal, member: str,
    totals: "LedgerTotals | None" = None, now: float | None = None, requests: int = 1,
) -> Reservation | Refusal:
    """Count one model call and reserve its tokens and cost, or say which limit refuses it."""
    now = time.time() if now is None else now
    windows = Windows.at(now)
    cluster = is_cluster(redis_client)
    keys = keys_of(user_id, windows) + ([] if cluster else [refusals_key(windows.day)])
    cost_micro = int(cost_usd * MICRO_USD)
    increments = (requests, requests, tokens, tokens, cost_micro)
    limit_values = (
        _limit(limits.requests_per_minute), _limit(limits.requests_per_day), _limit(limits.tokens_per_day),
        _limit(limits.tokens_per_month), _limit(limits.cost_per_month, MICRO_USD),
    )
    numbers = [repr(now), str(_limit(limits.concurrent_replies)), repr(now + SLOT_SECONDS), str(user_id)]
    for limit, increment, ttl in zip(limit_values, increments, _ttls(windows, now), strict=True):
        numbers += [str(limit), str(increment), str(ttl)]
    args = [" ".join(numbers), member]
    for _ in range(3):
        result = _run(redis_client, ADMIT, keys, args)
        outcome = result[0].decode() if isinstance(result[0], bytes) else result[0]
        if outcome == "ok":
            return Reservation(user_id, member, windows, tokens, cost_micro, limit_values[4], int(result[1]))
        if outcome == "refused":
            index, used, allowed = int(result[1]) - 1, int(result[2]), int(result[3])
            if cluster:
                _count_refusal(redis_client, user_id, index + 1, windows.day)
            return Refusal(LIMIT_NAMES[index], allowed, used, windows.ends()[index])
        seed(redis_client, user_id, windows, totals or ledger_totals, now)
    raise RuntimeError("quota counters could not be seeded")


def _count_refusal(redis_client: redis.Redis, user_id: int, index: int, day: str) -> None:
    """A refusal counted on a cluster, where today's refusals live in another slot than the user's keys."""
    pipe = redis_client.pipeline(transaction=False)
    pipe.hincrby(refusals_key(day), f"{user_id}:{index}", 1)
    pipe.expire(refusals_key(day), 40 * 86400)
    pipe.execute()


_SHAS = {script: hashlib.sha1(script.encode()).hexdigest() for script in (ADMIT, SETTLE, SETTLE_SITE)}


def _run(redis_client: redis.Redis, script: str, keys: list[str], args: list[object]) -> Any:
    """EVALSHA, sending the script itself only when Redis does not have it (first use, or a restart)."""
    try:
        return redis_client.evalsha(_SHAS[script], len(keys), *keys, *args)
    except redis.exceptions.NoScriptError:
        return redis_client.eval(script, len(keys), *keys, *args)


def _run_pipelined(redis_client: redis.Redis, calls: list[tuple[str, list[str], list[object]]]) -> list[Any]:
    """Several scripts in one round trip (each routed to its own node on a cluster); any that Redis
    does not have yet is sent in full after. A cluster's pipeline takes no scripts: one at a time."""
    if is_cluster(redis_client):
        return [_run(redis_client, script, keys, args) for script, keys, args in calls]
    pipe = redis_client.pipeline(transaction=False)
    for script, keys, args in calls:
        pipe.evalsha(_SHAS[script], len(keys), *keys, *args)
    replies = pipe.execute(raise_on_error=False)
    for index, ((script, keys, args), reply) in enumerate(zip(calls, replies, strict=True)):
        if isinstance(reply, redis.exceptions.NoScriptError):
            replies[index] = redis_client.eval(script, len(keys), *keys, *args)
        elif isinstance(reply, Exception):
            raise reply
    return replies


def _ttls(windows: Windows, now: float) -> list[int]:
    """How long each of the five counters lives: to the end of its window, and a minute more."""
    return [max(1, ends - int(now)) + 60 for ends in windows.ends()[:5]]


def seed(redis_client: redis.Redis, user_id: int, windows: Windows, totals: LedgerTotals, now: float) -> None:
    """Counters Redis does not have (a new month, or lost data) start from the ledger, never from zero."""
    pipe = redis_client.pipeline(transaction=False)
    for key, total, ttl in zip(keys_of(user_id, windows)[:5], totals(user_id, windows), _ttls(windows, now), strict=True):
        pipe.set(key, total, nx=True, ex=ttl)
    pipe.execute()


def settle(
    redis_client: redis.Redis, reservation: Reservation, tokens: int, cost_usd: Decimal
) -> tuple[int | None, int | None]:
    """The call ended: replace its reservation by what it used, and free its concurrency slot.
    Returns the user's and the site's cost this month in micro-dollars (None: not counted in Redis)."""
    keys = keys_of(reservation.user_id, reservation.windows)
    cost = int(cost_usd * MICRO_USD)
    token_change = tokens - reservation.tokens
    cost_change = cost - reservation.cost_micro_usd
    calls = [(SETTLE, keys[2:6], [token_change, cost_change, reservation.member]),
             (SETTLE_SITE, [site_cost_key(reservation.windows.month)], [cost])]
    user_cost, site_cost = (int(value) for value in _run_pipelined(redis_client, calls))
    return (None if user_cost < 0 else user_cost), (None if site_cost < 0 else site_cost)


def settle_site(redis_client: redis.Redis, windows: Windows, cost_usd: Decimal) -> int | None:
    """A call the site pays for ended: its cost counts toward the site's month, never a user's.
    Returns the site's cost this month in micro-dollars (None: Redis has no counter yet)."""
    site = _run(redis_client, SETTLE_SITE, [site_cost_key(windows.month)], [int(cost_usd * MICRO_USD)])
    return None if int(site) < 0 else int(site)


def site_cost_key(month: str) -> str:
    return f"{settings.PARLEY_KEY_PREFIX}:quota:site:cost:{month}"


def site_cost(redis_client: redis.Redis, windows: Windows) -> int:
    """The whole site's cost this month in micro-dollars, counted from the ledger if Redis lost it."""
    key = site_cost_key(windows.month)
    value = redis_client.get(key)
    if value is not None:
        return int(value)
    total = site_ledger_cost(windows)
    redis_client.set(key, int(total * MICRO_USD), nx=True, ex=max(60, windows.month_ends - int(time.time())) + 86_400)
    return int(redis_client.get(key) or 0)


def site_ledger_cost(windows: Windows) -> Decimal:
    """What the site has spent this month, by the ledger: every user's calls and its own (shadow runs)."""
    month_start = windows.starts()[2]
    return UsageRecord.objects.filter(created__gte=month_start).aggregate(cost=Sum("cost_usd"))["cost"] or Decimal(0)


def ledger_totals(user_id: int, windows: Windows) -> tuple[int, int, int, int, int]:
    """What the database says the user has used: sends (their messages) this minute and today, and
    the ledger's tokens today and this month and cost this month; all since the last reset, if later."""
    reset = CounterReset.objects.filter(user_id=user_id).order_by("-at").values_list("at", flat=True).first()

    def since(start: datetime) -> datetime:
        return max(start, reset) if reset is not None else start

    minute_start, day_start, month_start = (since(start) for start in windows.starts())
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


def reset_counters(user: User, by: User | None, note: str = "") -> CounterReset:
    """Give a user a fresh minute, day and month: recorded (the audit trail, and what the counters
    are rebuilt from), then the user's counters are dropped so the next call rebuilds them.
    Replies still running keep their concurrency slots."""
    reset = CounterReset.objects.create(user=user, by=by, note=note[:200])
    base = f"{user_base(user.pk)}:"
    keys = [key for key in client().scan_iter(f"{base}*", count=500) if not key.endswith(b":active")]
    if keys:
        client().delete(*keys)
    return reset


def uncount_refusal(redis_client: redis.Redis, user_id: int, limit: str, now: float) -> None:
    """Take back a refusal the admission script counted, when the call went ahead after all (on
    the plan's fallback model): the admins' chart counts calls that were turned away."""
    field = f"{user_id}:{LIMIT_NAMES.index(limit) + 1}"
    redis_client.hincrby(refusals_key(Windows.at(now).day), field, -1)


def refusal_counts(days: list[str]) -> dict[tuple[str, int, str], int]:
    """Refused calls by (day as YYYYMMDD, user id, limit name), for the given days."""
    pipe = client().pipeline(transaction=False)
    for day in days:
        pipe.hgetall(refusals_key(day))
    counts: dict[tuple[str, int, str], int] = {}
    for day, fields in zip(days, pipe.execute(), strict=True):
        for field, count in fields.items():
            if int(count) <= 0:
                continue  # every refusal of it was taken back
            user_id, _, index = field.decode().partition(":")
            counts[(day, int(user_id), LIMIT_NAMES[int(index) - 1])] = int(count)
    return counts
