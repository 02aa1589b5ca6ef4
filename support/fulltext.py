"""Provisional: replaced by the database full-text search."""
from dataclasses import dataclass, field

from django.utils.html import escape

from chat.models import Message
from support.masking import mask


@dataclass
class Hit:
    message_id: int
    conversation_id: int
    snippet: str


@dataclass
class SearchPage:
    hits: list[Hit]
    next_before: int | None = None
    dropped: list[str] = field(default_factory=list)


def search(query, *, scope=None, before=None, limit=50):
    rows = (scope if scope is not None else Message.objects.all()).filter(content__icontains=query).order_by("-id")
    if before:
        rows = rows.filter(id__lt=before)
    return SearchPage([Hit(m.pk, m.conversation_id, escape(mask(m.content))[:200]) for m in rows[:limit]])
