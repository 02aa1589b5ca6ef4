"""An admin forces a breaker open or closed, or puts it back to automatic: recorded in the
database (the mode, and the change with who made it) and applied in Redis, or not at all."""

from django.db import transaction

from accounts.models import User
from breakers.circuit import Transition, write_event
from breakers.models import CLOSED, Breaker, BreakerEvent
from breakers.scripts import breaker_keys, set_mode_script, text
from parley.redis_clients import sync_client

REASONS = {
    Breaker.Mode.FORCED_OPEN: "forced open in admin",
    Breaker.Mode.FORCED_CLOSED: "forced closed in admin",
    Breaker.Mode.AUTOMATIC: "back to automatic in admin: closed, its failures forgotten",
}


def force(endpoint: str, model: str, mode: str, by: User) -> BreakerEvent | None:
    """Set a breaker's mode (a Breaker.Mode value). Returns the change as written to the history,
    or None when the breaker already was in that state. Redis failing to answer raises its error
    and nothing is changed (the database's part is rolled back)."""
    if mode not in Breaker.Mode.values:
        raise ValueError(f"{mode!r} is not a breaker mode: use one of {', '.join(Breaker.Mode.values)}.")
    with transaction.atomic():
        Breaker.objects.update_or_create(endpoint=endpoint, model=model, defaults={"mode": mode, "changed_by": by})
        before = text(set_mode_script.run(sync_client(), breaker_keys(endpoint, model), [mode]))
        after = CLOSED if mode == Breaker.Mode.AUTOMATIC else mode
        if before == after:
            return None
        return write_event(Transition(endpoint, model, before, after, 0, REASONS[Breaker.Mode(mode)]), by=by)
