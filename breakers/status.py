"""Every breaker of the catalogue's offered models with its live state, for the admin and metrics."""

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

import redis
from django.conf import settings

from breakers.circuit import breaker_of
from breakers.models import CLOSED, FORCED_CLOSED, FORCED_OPEN, HALF_OPEN, OPEN, STATES, Breaker
from breakers.scripts import breaker_keys, peek_script, text
from chat.models import ChatModel
from parley.redis_clients import sync_client

logger = logging.getLogger(__name__)

UNKNOWN = "unknown"  # Redis did not answer


@dataclass(frozen=True, slots=True)
class BreakerState:
    endpoint: str
    model: str
    state: str  # as a check would see it now (a breaker past its cool-down: half_open), or "unknown"
    mode: str  # Breaker.Mode: auto, forced_open or forced_closed
    failures: int  # closed: failures in the window now; open or half-open: the failures that opened it
    opened_at: datetime | None  # when it last opened (open or half-open only)
    retry_in: float  # seconds until it lets a probe through (open only)
    probe_in_flight: bool  # half-open and a caller holds the probe
    models: tuple[str, ...]  # the catalogue's models (names) whose calls it guards
    changed_by: str  # who last forced its mode or put it back to automatic ("": nobody)

    @property
    def label(self) -> str:
        """The state in words: "half-open", "forced open", "unknown"."""
        return dict(STATES).get(self.state, self.state)

    @property
    def allows_calls(self) -> bool:
        return self.state in {CLOSED, FORCED_CLOSED, UNKNOWN}


def known_breakers() -> dict[tuple[str, str], tuple[str, ...]]:
    """Breakers of the offered catalogue, and any still forced, with the models each guards."""
    found: dict[tuple[str, str], list[str]] = {}
    for model in ChatModel.objects.offered():
        found.setdefault(breaker_of(model), []).append(model.name)
    for pair in Breaker.objects.exclude(mode=Breaker.Mode.AUTOMATIC).values_list("endpoint", "model"):
        found.setdefault(pair, [])
    return {pair: tuple(names) for pair, names in sorted(found.items())}


def snapshot() -> list[BreakerState]:
    """The known breakers (`known_breakers`), sorted by endpoint and model, each as it is now:
    one pipelined Redis round trip for all of them, and two small queries."""
    known = known_breakers()
    rows = {(row.endpoint, row.model): row for row in Breaker.objects.select_related("changed_by")}
    window_ms = max(1, round(settings.PARLEY_BREAKER_WINDOW_SECONDS * 1000))
    try:
        replies: list[list | None] = peek_script.run_many(
            sync_client(), [(breaker_keys(*pair), [window_ms]) for pair in known]
        )
    except (redis.RedisError, OSError) as error:
        logger.warning("Circuit breakers' states could not be read: Redis did not answer (%s)", error)
        replies = [None] * len(known)
    return [_state(pair, names, rows.get(pair), reply) for (pair, names), reply in zip(known.items(), replies, strict=True)]


def _state(pair: tuple[str, str], models: tuple[str, ...], row: Breaker | None, reply: list | None) -> BreakerState:
    stored_mode = row.mode if row else Breaker.Mode.AUTOMATIC
    changed_by = row.changed_by.get_username() if row and row.changed_by else ""
    if reply is None:
        return BreakerState(*pair, UNKNOWN, stored_mode, 0, None, 0.0, False, models, changed_by)
    # A mode Redis has lost is the database's until the next check seeds it again.
    mode, state, opened, opened_failures, window_failures, probe_ttl, now = (
        text(reply[0]) or stored_mode, text(reply[1]), text(reply[2]), int(reply[3]), int(reply[4]), int(reply[5]), int(reply[6]),
    )
    if mode in {FORCED_OPEN, FORCED_CLOSED}:
        return BreakerState(*pair, mode, mode, 0, None, 0.0, False, models, changed_by)
    if state == CLOSED:
        return BreakerState(*pair, CLOSED, mode, window_failures, None, 0.0, False, models, changed_by)
    opened_ms = int(opened or now)
    opened_at = datetime.fromtimestamp(opened_ms / 1000, UTC)
    wait_ms = opened_ms + round(settings.PARLEY_BREAKER_COOLDOWN_SECONDS * 1000) - now
    if state == OPEN and wait_ms > 0:
        return BreakerState(*pair, OPEN, mode, opened_failures, opened_at, wait_ms / 1000, False, models, changed_by)
    # Past its cool-down an open breaker is half-open to the next check; a probe holds it only while its TTL runs.
    probing = state == HALF_OPEN and probe_ttl > 0
    return BreakerState(*pair, HALF_OPEN, mode, opened_failures, opened_at, 0.0, probing, models, changed_by)
