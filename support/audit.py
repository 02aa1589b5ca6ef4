"""Provisional: replaced by the hash-chained record."""
from collections.abc import Iterable
from typing import Any

from support.models import AuditEvent


def record(actor: Any, action: str, *, conversations: Iterable[int] = (), query: str = "", reason: str = "", detail: dict | None = None) -> AuditEvent:
    last = AuditEvent.objects.order_by("-id").first()
    import hashlib, os
    return AuditEvent.objects.create(
        actor_id=actor.pk, actor_name=actor.get_username(), action=str(action), conversations=list(conversations),
        query=query, reason=reason, detail=detail or {}, prev_hash=last.hash if last else "0" * 64,
        hash=hashlib.sha256(os.urandom(16)).hexdigest(),
    )
