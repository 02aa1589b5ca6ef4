"""The support console's audit record: every look at transcripts, appended as one row chained to
the row before it by a hash, and the check that the chain is whole.

Row n's hash is sha256 over a canonical encoding of its own id and content and of row n-1's hash
(its `prev_hash`; the first row's is 64 zeros). So a row edited in the database no longer matches
its hash ("edited"), a row deleted from the middle leaves the next row's `prev_hash` pointing at
nothing ("missing before it"), and renumbered rows no longer match their hashes. The last row has
no successor to betray its deletion; `AuditHead`, written in the same transaction as every append,
names it instead.

What the chain cannot do: anyone who can write to the database can recompute every hash from the
first changed row on, and the head with them. Only a copy of the head kept outside the database
(`verify_audit` prints it) shows that rewrite; see docs/support.md."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from support.models import AuditEvent, AuditHead

GENESIS = "0" * 64
CHUNK = 1000  # rows per query when verifying: the record grows forever, memory must not
# Any fixed 64-bit number that no other part of the app takes an advisory lock on.
ADVISORY_LOCK_KEY = 0x5041524C4559_0A  # "PARLEY", then 0x0A for the audit record


class Problem(StrEnum):
    EDITED = "edited"
    MISSING_BEFORE = "missing before it"
    MISSING_AT_END = "missing at the end"
    UNRECORDED = "added outside the record"


@dataclass(frozen=True)
class Broken:
    """The first broken link: the row where the chain stops holding, and why."""

    row_id: int
    problem: Problem
    explanation: str

    def __str__(self) -> str:
        return f"audit record broken at row {self.row_id}: {self.problem} ({self.explanation})"


@dataclass(frozen=True)
class Intact:
    rows: int
    last_id: int
    last_hash: str


def record(
    actor: Any,
    action: AuditEvent.Action | str,
    *,
    conversations: Iterable[int] = (),
    query: str = "",
    reason: str = "",
    detail: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one row: `actor` (a user, or None for the system) did `action` to `conversations`.

    Runs in its own atomic block, so inside a caller's transaction the row commits, or rolls back,
    with the caller's work; and until then every other append waits (PostgreSQL holds the lock to
    the end of the outermost transaction), so keep such transactions short and record last in
    them: a transaction that appends and then waits for a row lock held by another one waiting to
    append is a deadlock (PostgreSQL breaks it by failing one). `detail` holds plain
    JSON only (str, int, bool, None, lists, dicts with str keys): floats are refused, since the
    text PostgreSQL gives back for some of them is not the text that was hashed."""
    event = AuditEvent(
        at=timezone.now(),
        actor_id=getattr(actor, "pk", None),
        actor_name=_text(actor.get_username() if actor is not None else "(system)"),
        action=AuditEvent.Action(action).value,
        conversations=sorted({int(pk) for pk in conversations}),
        query=_text(query),
        reason=_text(reason),
        detail=_plain(detail or {}),
    )
    with transaction.atomic():
        _serialise_appends()
        head = _head_for_append()
        event.id = head.last_id + 1
        event.prev_hash = head.last_hash
        event.hash = digest(event)
        event.save()
        head.last_id, head.last_hash = event.id, event.hash
        head.save(update_fields=["last_id", "last_hash"])
    return event


def verify() -> Broken | None:
    """The first broken link of the record, walking it in id order a chunk at a time; None when whole."""
    result = check()
    return result if isinstance(result, Broken) else None


def check() -> Broken | Intact:
    """`verify`, with the count and the last row when the record is whole."""
    head = AuditHead.objects.first()  # read first: a row appended during the walk is then past it
    previous_id, previous_hash, rows = 0, GENESIS, 0
    for event in _rows():
        if event.prev_hash != previous_hash:
            return Broken(event.id, Problem.MISSING_BEFORE, _missing_before(previous_id))
        if digest(event) != event.hash:
            return Broken(event.id, Problem.EDITED, "its hash does not match its content")
        if head is not None and event.id == head.last_id and event.hash != head.last_hash:
            return Broken(event.id, Problem.EDITED, "its hash is not the one recorded when it was appended")
        previous_id, previous_hash, rows = event.id, event.hash, rows + 1
    return _check_end(head, previous_id, previous_hash, rows)


def digest(event: AuditEvent) -> str:
    """sha256 of the row's canonical encoding: sorted keys, compact, ASCII-only JSON."""
    return hashlib.sha256(_canonical(_content(event)).encode("ascii")).hexdigest()


def _content(event: AuditEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "at": _instant(event.at),
        "actor_id": event.actor_id,
        "actor_name": event.actor_name,
        "action": str(event.action),
        "conversations": event.conversations,
        "query": event.query,
        "reason": event.reason,
        "detail": event.detail,
        "prev_hash": event.prev_hash,
    }


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def _instant(at: datetime) -> str:
    # Both databases keep microseconds; the offset is always +00:00 so one instant has one text.
    return at.astimezone(UTC).isoformat(timespec="microseconds")


def _text(value: str) -> str:
    # PostgreSQL refuses NUL in text and jsonb; the record must not fail on a search that holds one.
    return str(value).replace("\x00", "\ufffd")


def _plain(value: Any) -> Any:
    """A copy of `value` as it will read back from either database, or TypeError."""
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        if not all(isinstance(key, str) for key in value):
            raise TypeError("Audit detail keys must be strings.")
        return {_text(key): _plain(item) for key, item in value.items()}
    raise TypeError(f"Audit detail holds plain JSON only (no {type(value).__name__}); write numbers with fractions as strings.")


def _serialise_appends() -> None:
    """Two appends must never chain onto the same row. On PostgreSQL a transaction-scoped advisory
    lock makes the next one wait until this one's transaction ends. On SQLite every transaction
    begins IMMEDIATE (parley/settings.py), taking the database's one write lock at BEGIN, so the
    atomic block around this call has already serialised the writers."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [ADVISORY_LOCK_KEY])


def _head_for_append() -> AuditHead:
    head = AuditHead.objects.first()
    if head is not None:
        return head
    if AuditEvent.objects.exists():
        # Starting a second chain would hide the first one's end; stop loudly instead.
        raise RuntimeError("The audit record's head is gone: run `manage.py verify_audit` and restore it.")
    return AuditHead.objects.create(last_id=0, last_hash=GENESIS)  # the first append ever, alone under the lock


def _rows() -> Iterator[AuditEvent]:
    last = 0
    while True:
        chunk = list(AuditEvent.objects.filter(id__gt=last).order_by("id")[:CHUNK])
        yield from chunk
        if len(chunk) < CHUNK:
            return
        last = chunk[-1].id


def _missing_before(previous_id: int) -> str:
    if previous_id == 0:
        return "it is the first row but does not start the chain: the rows before it were deleted"
    return f"its prev_hash is not row {previous_id}'s hash: rows between them were deleted, or row {previous_id} was rewritten"


def _check_end(head: AuditHead | None, last_id: int, last_hash: str, rows: int) -> Broken | Intact:
    if head is None:
        if rows:
            return Broken(last_id, Problem.MISSING_AT_END, "the record's head is gone, so its end cannot be checked")
        return Intact(0, 0, GENESIS)
    if last_id < head.last_id:
        return Broken(
            last_id + 1, Problem.MISSING_AT_END, f"the record ends at row {last_id} but its last append was row {head.last_id}"
        )
    if last_id > head.last_id:
        # Appends after the head was read update it; a row beyond the head as read now was not appended.
        now = AuditHead.objects.filter(pk=head.pk).values_list("last_id", flat=True).first() or 0
        if last_id > now:
            return Broken(now + 1, Problem.UNRECORDED, "this row is past the last append the record knows of")
    return Intact(rows, last_id, last_hash)


def still_has(row_id: int, row_hash: str) -> Broken | None:
    """Does row `row_id` still carry `row_hash`, a head copied out of the database earlier? The one
    check that catches a chain rewritten from that row back (hashes recomputed, head and all)."""
    stored = AuditEvent.objects.filter(id=row_id).values_list("hash", flat=True).first()
    if stored is None:
        return Broken(row_id, Problem.MISSING_AT_END, "the row named by the head kept outside the database is gone")
    if stored != row_hash:
        return Broken(row_id, Problem.EDITED, "its hash is not the one kept outside the database: the record was rewritten")
    return None
