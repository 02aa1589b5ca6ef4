"""Circuit breakers per provider endpoint and model, shared by every web process and worker through Redis.

    gate = await acheck(endpoint, model)       # or check() in sync code
    if not gate.allowed: fail over, or wait gate.retry_in
    ... call the provider ...
    await arecord(endpoint, model, ok=False, code=error.code, probe=gate.probe)   # a retryable failure
    await arecord(endpoint, model, ok=True, probe=gate.probe)                     # it answered

Closed, a breaker counts retryable failures in a sliding window and opens at
PARLEY_BREAKER_FAILURES within PARLEY_BREAKER_WINDOW_SECONDS. A success while closed does not
clear the window: only retryable failures (rate limited, overloaded, timeout, unavailable) are
counted, and that many within the window is a sign however many calls went through between them.
(So a success that is not a probe's changes nothing, and is not even sent to Redis.) Open, it
refuses every call for PARLEY_BREAKER_COOLDOWN_SECONDS; then one caller across all processes gets
the probe, everyone else is still refused; the probe's success closes it, its failure opens it
for another cool-down. A probe not reported within PARLEY_BREAKER_PROBE_SECONDS is presumed lost
and the next caller probes instead. A forced mode (admin, breakers/control.py) wins over all of it.

Each check or record is one Redis round trip (breakers/scripts.py). If Redis does not answer, calls
go ahead (fail open): a warning is logged and this process leaves Redis alone for a moment.

Every change of state is written once as a `BreakerEvent`, by the process whose call made it: the
script says which call that was. The row is handed to a writer thread of its own, sync callers'
as async ones': no event loop, shared database thread or Celery task waits for it, a caller's
transaction rolled back does not take it along (the change happened in Redis all the same), and
one breaker's rows are written in the order its changes happened.
"""

import asyncio
import logging
import threading
import time
import weakref
from concurrent import futures
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis
import redis.asyncio as aioredis
from django.conf import settings
from django.db import connection
from django.db import DatabaseError

from breakers.models import CLOSED, HALF_OPEN, OPEN, Breaker, BreakerEvent
from breakers.scripts import breaker_keys, check_script, record_script, text
from parley.redis_clients import bounded_async_client, sync_client

if TYPE_CHECKING:
    from chat.models import ChatModel

logger = logging.getLogger(__name__)

# After Redis failed to answer, this process fails open without asking it for this long: a Redis
# that hangs must not add its timeout to every call, nor a warning to the log per call.
REDIS_REST_SECONDS = 2.0
# An async check waits at most this long for Redis (for a connection, then for its reply) before it fails open.
ASYNC_TIMEOUT_SECONDS = 1.0
# Connections of one event loop's client: more checks in flight at once wait for one (each a
# sub-millisecond round trip) rather than fail open.
ASYNC_CONNECTIONS = 100


@dataclass(frozen=True, slots=True)
class Gate:
    """What a check says of one call."""

    allowed: bool  # False: reject fast, do not call the provider
    probe: bool  # True: this call is the single half-open probe; report its result with probe=True
    state: str  # "closed" | "open" | "half_open" | "forced_open" | "forced_closed"
    retry_in: float  # seconds until an open breaker lets a probe through (0 when allowed); half-open: at
    # most this long (the probe's TTL; its report may free it sooner); forced open: the cool-down (no end is known)


@dataclass(frozen=True, slots=True)
class Transition:
    """A change of state one call made, to be written as a BreakerEvent."""

    endpoint: str
    model: str
    from_state: str
    to_state: str
    failures: int
    reason: str


FAIL_OPEN = Gate(allowed=True, probe=False, state=CLOSED, retry_in=0.0)


def check(endpoint: str, model: str) -> Gate:
    """May a call to `model` at `endpoint` go ahead? Sync code (Celery tasks, admin)."""
    keys = breaker_keys(*_valid(endpoint, model))
    if _resting():
        return FAIL_OPEN
    try:
        client = sync_client()
        reply = check_script.run(client, keys, _check_args(""))
        if text(reply[0]) == "seed":
            mode = _stored_mode(endpoint, model)
            if mode is None:
                return FAIL_OPEN
            reply = check_script.run(client, keys, _check_args(mode))
    except (redis.RedisError, OSError) as error:
        return _fail_open(error)
    return _answered(endpoint, model, reply)


async def acheck(endpoint: str, model: str) -> Gate:
    """May a call to `model` at `endpoint` go ahead? Async code (the web process's event loop)."""
    keys = breaker_keys(*_valid(endpoint, model))
    if _resting():
        return FAIL_OPEN
    try:
        client = _async_client()
        reply = await check_script.arun(client, keys, _check_args(""))
        if text(reply[0]) == "seed":
            # A breaker's first check since Redis started (or lost its data): one database read, on
            # a thread of its own: the caller may itself run inside the shared database thread (a
            # worker's step run with asyncio.run from sync code), where another hop would deadlock.
            mode = await asyncio.to_thread(_stored_mode_apart, endpoint, model)
            if mode is None:
                return FAIL_OPEN
            reply = await check_script.arun(client, keys, _check_args(mode))
    except (redis.RedisError, OSError) as error:
        return _fail_open(error)
    return _answered(endpoint, model, reply)


def _answered(endpoint: str, model: str, reply: Any) -> Gate:
    """The check script's answer as a Gate; a change of state it made goes to the history."""
    gate, transition = _gate(endpoint, model, reply)
    if transition is not None:
        _write(transition)
    return gate


def record(endpoint: str, model: str, ok: bool, code: str = "", probe: bool = False) -> None:
    """Report a call's outcome: ok=False only for a retryable failure, with its error code; probe=True
    for the call whose Gate said probe. Report a probe as soon as its outcome is known (its first
    token, or its error): until then every other caller is refused."""
    endpoint, model = _valid(endpoint, model)
    if ok and not probe:
        return  # a success changes nothing but a probe's (see the module's docstring)
    if _resting():
        return
    try:
        reply = record_script.run(sync_client(), breaker_keys(endpoint, model), _record_args(ok, probe))
    except (redis.RedisError, OSError) as error:
        _fail_open(error)
        return
    transition = _transition(endpoint, model, reply, code)
    if transition is not None:
        _write(transition)


async def arecord(endpoint: str, model: str, ok: bool, code: str = "", probe: bool = False) -> None:
    """`record` for async code."""
    endpoint, model = _valid(endpoint, model)
    if ok and not probe:
        return
    if _resting():
        return
    try:
        reply = await record_script.arun(_async_client(), breaker_keys(endpoint, model), _record_args(ok, probe))
    except (redis.RedisError, OSError) as error:
        _fail_open(error)
        return
    transition = _transition(endpoint, model, reply, code)
    if transition is not None:
        _write(transition)


def breaker_of(model: "ChatModel") -> tuple[str, str]:
    """The breaker that guards a catalogue model's calls, as (endpoint, model) for check and record:
    its endpoint (its provider's name when it has none) and the id the provider is asked for."""
    return model.endpoint or model.provider, model.model_id


def write_event(transition: Transition, by: Any = None) -> BreakerEvent:
    """The history's row of one change of state; `by`: the admin who forced it."""
    return BreakerEvent.objects.create(
        endpoint=transition.endpoint, model=transition.model, from_state=transition.from_state,
        to_state=transition.to_state, failures=transition.failures, reason=transition.reason[:200], by=by,
    )


def wait_for_event_writes(timeout: float = 5.0) -> None:
    """Wait until the transitions this process handed to other threads are written (a process
    about to stop, a test about to read or empty the history)."""
    with _writes_lock:
        pending = list(_writes)
    futures.wait(pending, timeout)


_writes: set[futures.Future[None]] = set()
_writes_lock = threading.Lock()


def _write(transition: Transition) -> None:
    """Hand the transition's row to the one writer thread, keeping its future until it is written:
    one thread, so that a breaker's rows are written in the order its transitions happened."""
    future = _writer.submit(_write_now, transition)
    with _writes_lock:
        _writes.add(future)
    future.add_done_callback(_forget_write)


def _write_now(transition: Transition) -> None:
    try:
        write_event(transition)
    except Exception:  # noqa: BLE001 - a lost history row must not take the writer thread down
        logger.exception("A circuit breaker event could not be written")
    finally:
        connection.close()  # no idle connection held between the rare transitions


# Transitions are rare; a thread of its own keeps them in order and off every caller's path.
_writer = futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="parley-breaker-events")


def _forget_write(future: futures.Future[None]) -> None:
    with _writes_lock:
        _writes.discard(future)


def _valid(endpoint: str, model: str) -> tuple[str, str]:
    if not endpoint or not model or "|" in endpoint:
        raise ValueError(f"A breaker needs an endpoint name (no '|') and a model id, not {endpoint!r} and {model!r}.")
    return endpoint, model


def _check_args(seed_mode: str) -> list[object]:
    return [_ms(settings.PARLEY_BREAKER_COOLDOWN_SECONDS), _ms(settings.PARLEY_BREAKER_PROBE_SECONDS), seed_mode]


def _record_args(ok: bool, probe: bool) -> list[object]:
    return [int(ok), int(probe), settings.PARLEY_BREAKER_FAILURES, _ms(settings.PARLEY_BREAKER_WINDOW_SECONDS)]


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _gate(endpoint: str, model: str, reply: list[Any]) -> tuple[Gate, Transition | None]:
    state, allowed, probe, wait_ms, left, failures = text(reply[0]), reply[1], reply[2], reply[3], text(reply[4]), reply[5]
    gate = Gate(allowed=bool(allowed), probe=bool(probe), state=state, retry_in=0.0 if allowed else wait_ms / 1000)
    if not left:
        return gate, None
    reason = "cool-down over: one call let through as the probe"
    return gate, Transition(endpoint, model, left, state, int(failures), reason)


def _transition(endpoint: str, model: str, reply: list[Any], code: str) -> Transition | None:
    left, entered, failures = text(reply[0]), text(reply[1]), int(reply[2])
    if not left:
        return None
    if left == CLOSED:
        reason = f"{failures} failures within {settings.PARLEY_BREAKER_WINDOW_SECONDS:g} s" + (f", the last {code}" if code else "")
    elif left == HALF_OPEN and entered == OPEN:
        reason = "the probe failed" + (f" ({code})" if code else "")
    else:
        reason = "the probe succeeded"
    return Transition(endpoint, model, left, entered, failures, reason)


def _stored_mode(endpoint: str, model: str) -> str | None:
    """The mode an admin forced, from the database (None: it did not answer; try again next call)."""
    try:
        mode = Breaker.objects.filter(endpoint=endpoint, model=model).values_list("mode", flat=True).first()
    except DatabaseError:
        logger.warning("Circuit breaker %s %s: its forced mode could not be read; the call goes ahead", endpoint, model)
        return None
    return mode or Breaker.Mode.AUTOMATIC


def _stored_mode_apart(endpoint: str, model: str) -> str | None:
    """`_stored_mode` on a passing thread, which keeps no connection open once it has read."""
    try:
        return _stored_mode(endpoint, model)
    finally:
        connection.close()


# Redis's URL -> until when (monotonic) this process leaves it alone after it failed to answer.
_rest_until: dict[str, float] = {}


def _resting() -> bool:
    return time.monotonic() < _rest_until.get(settings.REDIS_URL, 0.0)


def _fail_open(error: Exception) -> Gate:
    _rest_until[settings.REDIS_URL] = time.monotonic() + REDIS_REST_SECONDS
    logger.warning(
        "Circuit breakers fail open: Redis did not answer (%s); calls go ahead unchecked for the next %g s",
        error, REDIS_REST_SECONDS,
    )
    return FAIL_OPEN


_async_clients: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, aioredis.Redis]]" = weakref.WeakKeyDictionary()


def _async_client() -> aioredis.Redis:
    """The running event loop's client (a loop's connections cannot serve another loop)."""
    clients = _async_clients.setdefault(asyncio.get_running_loop(), {})
    client = clients.get(settings.REDIS_URL)
    if client is None:
        client = clients[settings.REDIS_URL] = bounded_async_client(ASYNC_CONNECTIONS, ASYNC_TIMEOUT_SECONDS)
    return client
