"""Searching a user's own conversations: which match (titles and message text, in one query), and
the snippets around a match with the matches marked, escaped before anything is marked."""

import re
from dataclasses import dataclass
from typing import Any

from django.db.models import Exists, OuterRef, Q, QuerySet, Subquery
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from chat.models import Conversation, Message

QUERY_MAX = 100  # characters of a query that are searched for
SNIPPET_CHARS = 120  # about this much text around a match


def clean_query(query: str) -> str:
    return " ".join(query.split())[:QUERY_MAX]


def matching(conversations: QuerySet[Conversation], query: str) -> QuerySet[Conversation]:
    """Those whose title or any message holds `query`, each with the first such message's text as
    `matched_text`: subqueries of the one query, not a query per conversation."""
    in_messages = Message.objects.filter(conversation=OuterRef("pk"), content__icontains=query)
    return conversations.filter(Q(title__icontains=query) | Exists(in_messages)).annotate(
        matched_text=Subquery(in_messages.order_by("id").values("content")[:1])
    )


def spans(text: str, query: str) -> list[tuple[int, int]]:
    """Where `query` occurs in `text`, ignoring case (Unicode-aware, so offsets stay the text's own)."""
    if not query:
        return []
    return [match.span() for match in re.finditer(re.escape(query), text, flags=re.IGNORECASE)]


def excerpt(text: str, query: str, width: int = SNIPPET_CHARS) -> str:
    """About `width` characters of `text` around the first match, on one line, with ellipses where cut."""
    found = spans(text, query)
    return excerpt_at(text, found[0][0] if found else 0, width)


def excerpt_at(text: str, start: int, width: int = SNIPPET_CHARS) -> str:
    """About `width` characters of `text` around offset `start`, on one line, with ellipses where cut."""
    begin = max(0, start - width // 3)
    end = min(len(text), begin + width)
    begin = max(0, min(begin, end - width))
    piece = " ".join(text[begin:end].split())
    return ("…" if begin > 0 else "") + piece + ("…" if end < len(text) else "")


def highlighted(text: str, query: str) -> SafeString:
    """`text` as HTML: every piece escaped, then the matches wrapped in <mark>."""
    return marked(text, spans(text, query))


def marked(text: str, found: list[tuple[int, int]]) -> SafeString:
    """`text` as HTML: every piece escaped, then the spans `found` (in order, apart) wrapped in <mark>."""
    parts, last = [], 0
    for start, end in found:
        parts += [escape(text[last:start]), f"<mark>{escape(text[start:end])}</mark>"]
        last = end
    parts.append(escape(text[last:]))
    return mark_safe("".join(parts))  # every piece of the text was escaped above


@dataclass(frozen=True, slots=True)
class Hit:
    """How one conversation matched a query: its title, and a snippet of a message when one matched."""

    title: str
    title_html: SafeString
    snippet: str
    snippet_html: SafeString

    def as_dict(self, query: str) -> dict[str, Any]:
        return {
            "title_html": str(self.title_html),
            "snippet": self.snippet or None,
            "snippet_html": str(self.snippet_html) if self.snippet else None,
            "highlights": {"title": spans(self.title, query), "snippet": spans(self.snippet, query)},
        }


def hit(conversation: Conversation, query: str) -> Hit:
    title = conversation.display_title
    matched = getattr(conversation, "matched_text", None) or ""
    snippet = excerpt(matched, query) if matched else ""
    return Hit(title, highlighted(title, query), snippet, highlighted(snippet, query))
