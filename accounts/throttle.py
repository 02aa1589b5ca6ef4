"""Throttles for signing in and signing up, counted in Redis.

Sign-in. Failed passwords are counted three ways, each within PARLEY_SIGNIN_WINDOW_SECONDS (15 min):

- one account from one address (PARLEY_SIGNIN_FAILURES, 5): someone guessing one password;
- one address, any accounts (PARLEY_SIGNIN_ADDRESS_FAILURES, 20): one address trying many usernames;
- one account, any addresses (PARLEY_SIGNIN_ACCOUNT_FAILURES, 50): many addresses guessing one password.

Reaching a count locks that scope: while it lasts, attempts in it are refused with HTTP 429 before
any password is looked at, so a lock stops guessing instead of slowing it. The first lock lasts
PARLEY_SIGNIN_LOCK_SECONDS (30 s); each further lock of the same scope within a day doubles, up to
PARLEY_SIGNIN_LOCK_MAX_SECONDS (15 min).

Why three scopes, and how the owner keeps their account: whoever knows a username can fail to sign
in to it at will, so a lock on the account alone would let anyone keep its owner out for as long as
they cared to. The tight lock is on the pair (account, address), which stops the guesser's address
and leaves the owner elsewhere alone. The two coarse locks (an address, an account everywhere) catch
what the pair lock cannot, username spraying and guessing spread over many addresses, but they do not
apply to an account at an address it has signed in from within the last 30 days: a botnet hammering
an account, or a neighbour behind the same NAT spraying usernames, does not keep a user out of their
account from where they usually sign in. What remains is the pair lock when guesser and owner share
an address, and that lasts 15 minutes at most.

Usernames count whether or not such an account exists, so a lock tells nothing about which accounts
exist. A successful sign-in clears the pair's failures and escalation and remembers the address for
the account; it does not clear the address's or the account's totals, or someone with an account of
their own could wipe their address's count between guesses.

Sign-up. At most PARLEY_SIGNUPS_PER_HOUR accounts are created per address in an hour (counted from
the first); sign-ups with an invitation do not count, since an admin asked for them.

Addresses. Django sees the connection's address (REMOTE_ADDR). Behind a reverse proxy that is the
proxy, and every client would share one address (and one address lock: the exemption above still
lets known users in). Set PARLEY_TRUSTED_PROXIES to the number of proxies in front of Parley that
append the client's address to X-Forwarded-For: the address is then the entry the outermost of them
added. Entries left of it were written by the client and are never trusted. An IPv6 client counts
by its /64 network, since one host usually holds a whole /64.

Redis unreachable. Sign-in fails open: the throttle is skipped with a WARNING and passwords are
checked as before, because locking every user and admin out whenever Redis is away is worse than a
while without brute-force protection (each guess still costs a slow password hash). Sign-up fails
closed with a plain sentence: nobody loses anything by creating an account a few minutes later, and
chat needs Redis anyway.
"""

import hashlib
import ipaddress
import logging
import math
import time
from dataclasses import dataclass
from typing import Literal

import redis
from django.conf import settings
from django.http import HttpRequest, HttpResponse

from accounts.models import AuthEvent, User
from parley.redis_clients import sync_client

logger = logging.getLogger(__name__)

KNOWN_DAYS = 30
KNOWN_MAX = 20  # addresses remembered per account
ESCALATION_SECONDS = 86_400
SIGNUP_WINDOW = 3600
REFUSAL_ATTRIBUTE = "sign_in_refusal"

Scope = Literal["pair", "address", "account"]
# The order of the scopes in the scripts' keys and replies.
SCOPES: tuple[Scope, ...] = ("pair", "address", "account")
EVENT_KINDS: dict[Scope, AuthEvent.Kind] = {
    "pair": AuthEvent.Kind.ACCOUNT_AT_ADDRESS, "address": AuthEvent.Kind.ADDRESS, "account": AuthEvent.Kind.ACCOUNT,
}


@dataclass(frozen=True, slots=True)
class Refusal:
    """A sign-in or sign-up refused for now, and how long until it may be tried again."""

    reason: Literal["account", "address", "signup", "unavailable"]
    seconds: int

    @property
    def message(self) -> str:
        wait = f"Try again in {in_words(self.seconds)}."
        if self.reason == "account":
            return f"Too many failed sign-ins for this account. {wait}"
        if self.reason == "address":
            return f"Too many failed sign-ins from your network. {wait}"
        if self.reason == "signup":
            return f"Too many accounts created from your network. {wait}"
        return "Sign-up is unavailable for a moment. Try again in a few minutes."

    @property
    def status(self) -> int:
        return 503 if self.reason == "unavailable" else 429


def in_words(seconds: float) -> str:
    """'30 seconds', '2 minutes', '1 hour': rounded up, so the wait is never longer than said."""
    seconds = max(1, math.ceil(seconds))
    if seconds < 60:
        return f"{seconds} second{'s' if seconds != 1 else ''}"
    if seconds < 3600:
        minutes = math.ceil(seconds / 60)
        return f"{minutes} minute{'s' if minutes != 1 else ''}"
    hours = math.ceil(seconds / 3600)
    return f"{hours} hour{'s' if hours != 1 else ''}"


def client_address(request: HttpRequest) -> str:
    """The address throttles count by; see the module's docstring for proxies and IPv6."""
    address = request.META.get("REMOTE_ADDR", "")
    proxies = settings.PARLEY_TRUSTED_PROXIES
    if proxies:
        forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
        if len(forwarded) >= proxies:
            address = forwarded[-proxies]
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return "unknown"
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.IPv6Network((parsed, 64), strict=False))
    return str(parsed)


def account_id(username: str) -> str:
    """Usernames as Django compares them, case folded so 'Alice' and 'alice' share one count; hashed
    so that keys stay short whatever is typed."""
    normalized = User.normalize_username(username).strip().casefold()
    return hashlib.sha256(normalized.encode()).hexdigest()[:24]


client = sync_client  # bounded waits: a Redis that does not answer delays a sign-in by 2 s at most


def _base() -> str:
    # One hash tag for every sign-in key: the failure script reads the pair's, the address's and
    # the account's counts together, which on a Redis Cluster must live in one slot.
    return f"{settings.PARLEY_KEY_PREFIX}:auth:{{auth}}"


def _scope_keys(account: str, address: str) -> dict[Scope, str]:
    return {"pair": f"{account}:{address}", "address": address, "account": account}


# KEYS: failures, lock and escalation of each scope in SCOPES order (nine keys), then the account's
#       known addresses. ARGV: window seconds, first lock ms, longest lock ms, escalation seconds, then
#       each scope's limit, then the address. Returns for each scope the lock this failure set in ms
#       (0: none), then each scope's lock left in ms (below 1: none), then when the address last
#       signed in to the account (false: never).
FAILED = """
local set, left = {}, {}
for i = 0, 2 do
  local failures, lock, level = KEYS[i * 3 + 1], KEYS[i * 3 + 2], KEYS[i * 3 + 3]
  local count = redis.call('INCR', failures)
  if redis.call('TTL', failures) < 0 then redis.call('EXPIRE', failures, ARGV[1]) end
  set[i + 1] = 0
  if count >= tonumber(ARGV[5 + i]) then
    local n = redis.call('INCR', level)
    redis.call('EXPIRE', level, ARGV[4])
    local ms = math.floor(math.min(tonumber(ARGV[2]) * 2 ^ (n - 1), tonumber(ARGV[3])))
    redis.call('SET', lock, 1, 'PX', ms)
    redis.call('DEL', failures)
    set[i + 1] = ms
  end
  left[i + 1] = redis.call('PTTL', lock)
end
return {set[1], set[2], set[3], left[1], left[2], left[3], redis.call('ZSCORE', KEYS[10], ARGV[8])}
"""


def _refusal(pair_ms: int, address_ms: int, account_ms: int, known_since: bytes | float | None) -> Refusal | None:
    """The lock this client meets, given each scope's time left and when its address last signed in."""
    if pair_ms > 0:
        return Refusal("account", math.ceil(pair_ms / 1000))
    if known_since and float(known_since) > time.time() - KNOWN_DAYS * 86_400:
        return None
    if address_ms > 0:
        return Refusal("address", math.ceil(address_ms / 1000))
    if account_ms > 0:
        return Refusal("account", math.ceil(account_ms / 1000))
    return None


def _redis_down(action: str, exc: Exception) -> None:
    logger.warning("Sign-in throttle skipped (%s): Redis unreachable: %s", action, exc)


def refusal_before_check(request: HttpRequest, username: str) -> Refusal | None:
    """A lock that refuses this attempt before its password is looked at; None: go ahead."""
    account, address = account_id(username), client_address(request)
    names = _scope_keys(account, address)
    pipe = client().pipeline(transaction=False)
    for scope in SCOPES:
        pipe.pttl(f"{_base()}:lock:{scope}:{names[scope]}")
    pipe.zscore(f"{_base()}:known:{account}", address)
    try:
        pair_ms, address_ms, account_ms, known_since = pipe.execute()
    except redis.RedisError as exc:
        _redis_down("check", exc)
        return None
    return _refusal(pair_ms, address_ms, account_ms, known_since)


def failure_keys(account: str, address: str) -> list[str]:
    """The FAILED script's keys, in its order."""
    names = _scope_keys(account, address)
    keys = [f"{_base()}:{part}:{scope}:{names[scope]}" for scope in SCOPES for part in ("fail", "lock", "level")]
    return [*keys, f"{_base()}:known:{account}"]


def signup_keys(address: str) -> list[str]:
    """The SIGNUP script's keys: the address's count this hour, and whether its refusal was noted."""
    return [f"{_base()}:signup:{address}", f"{_base()}:signup-noted:{address}"]


def count_failure(request: HttpRequest, username: str) -> Refusal | None:
    """Count a wrong password; locks it set are recorded for admins. Returns the lock the client
    now meets, so the page can say so at once instead of at the next attempt."""
    account, address = account_id(username), client_address(request)
    keys = failure_keys(account, address)
    limits = (settings.PARLEY_SIGNIN_FAILURES, settings.PARLEY_SIGNIN_ADDRESS_FAILURES,
              settings.PARLEY_SIGNIN_ACCOUNT_FAILURES)
    args = (settings.PARLEY_SIGNIN_WINDOW_SECONDS, settings.PARLEY_SIGNIN_LOCK_SECONDS * 1000,
            settings.PARLEY_SIGNIN_LOCK_MAX_SECONDS * 1000, ESCALATION_SECONDS, *limits, address)
    try:
        *locks, known_since = client().eval(FAILED, len(keys), *keys, *args)
    except redis.RedisError as exc:
        _redis_down("count", exc)
        return None
    for scope, ms in zip(SCOPES, locks[:3]):
        if ms > 0:
            seconds = math.ceil(ms / 1000)
            kind = EVENT_KINDS[scope]
            AuthEvent.record(kind, username, address, seconds)
            logger.warning("Sign-in locked for %d s (%s): too many failed sign-ins for %r from %s",
                           seconds, kind.label, username, address)
    return _refusal(*locks[3:], known_since)


def count_success(request: HttpRequest, username: str) -> None:
    account, address = account_id(username), client_address(request)
    pair = _scope_keys(account, address)["pair"]
    known = f"{_base()}:known:{account}"
    pipe = client().pipeline(transaction=False)
    pipe.delete(f"{_base()}:fail:pair:{pair}")  # one key each: a cluster's pipeline takes no more
    pipe.delete(f"{_base()}:level:pair:{pair}")
    pipe.zadd(known, {address: time.time()})
    pipe.zremrangebyrank(known, 0, -KNOWN_MAX - 1)
    pipe.expire(known, KNOWN_DAYS * 86_400)
    try:
        pipe.execute()
    except redis.RedisError as exc:
        _redis_down("success", exc)


def lift(event: AuthEvent) -> None:
    """End the lock an event recorded, and its escalation (an admin's decision)."""
    if event.kind == AuthEvent.Kind.SIGNUP:
        names = signup_keys(event.address)
    else:
        scope = next(scope for scope, kind in EVENT_KINDS.items() if kind == event.kind)
        name = _scope_keys(account_id(event.username), event.address)[scope]
        names = [f"{_base()}:{part}:{scope}:{name}" for part in ("fail", "lock", "level")]
    client().delete(*names)


def refusal_of(request: HttpRequest) -> Refusal | None:
    """The refusal the sign-in backend left on this request, if any."""
    return getattr(request, REFUSAL_ATTRIBUTE, None)


def refused_status(request: HttpRequest, response: HttpResponse) -> HttpResponse:
    """A sign-in page answering a refused attempt says so in its status and when to come back."""
    refusal = refusal_of(request)
    if refusal is not None:
        response.status_code = refusal.status
        response["Retry-After"] = str(refusal.seconds)
    return response


# KEYS: the address's sign-ups this hour, the flag that its refusal was recorded.
# ARGV: the limit, the window in seconds, 1 to count a sign-up (0: only look).
# Returns {admitted (1/0), ms until the window ends, whether this refusal is the window's first}.
SIGNUP = """
local count = tonumber(redis.call('GET', KEYS[1]) or '0')
if count < tonumber(ARGV[1]) then
  if ARGV[3] == '1' then
    redis.call('INCR', KEYS[1])
    if redis.call('PTTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
  end
  return {1, 0, 0}
end
local left = redis.call('PTTL', KEYS[1])
if left < 1 then
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  left = ARGV[2] * 1000
end
local first = redis.call('SET', KEYS[2], 1, 'NX', 'PX', left)
return {0, left, first and 1 or 0}
"""


def signup_refusal(request: HttpRequest, username: str = "", count: bool = False) -> Refusal | None:
    """Whether this address has used up its sign-ups this hour; with `count`, a sign-up about to
    be made is counted unless it is refused. The first refusal in an hour is recorded for admins."""
    address = client_address(request)
    keys = signup_keys(address)
    limit = settings.PARLEY_SIGNUPS_PER_HOUR
    try:
        admitted, left_ms, first = client().eval(SIGNUP, 2, *keys, limit, SIGNUP_WINDOW, int(count))
    except redis.RedisError as exc:
        logger.warning("Sign-up refused: Redis unreachable: %s", exc)
        return Refusal("unavailable", 60)
    if admitted:
        return None
    seconds = math.ceil(left_ms / 1000)
    if first:
        AuthEvent.record(AuthEvent.Kind.SIGNUP, username, address, seconds)
        logger.warning("Sign-ups refused for %d s: %d accounts created from %s this hour", seconds, limit, address)
    return Refusal("signup", seconds)
