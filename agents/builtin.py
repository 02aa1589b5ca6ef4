"""The built-in tools' work, all offline: arithmetic, the user's own conversations, reports, e-mail.

Each takes the call (who, which run and step) and arguments already checked against its schema,
and returns JSON for the model. Ownership is decided here by the caller's user, never by an id the
model supplies.
"""

from typing import Any

from django.conf import settings
from django.core.mail import send_mail

from agents.calculator import as_text
from agents.calculator import calculate as evaluate
from agents.tools import ToolContext

SNIPPET_CHARS = 240


def calculate(call: ToolContext, arguments: dict[str, Any]) -> dict[str, Any]:
    return {"expression": arguments["expression"], "result": as_text(evaluate(arguments["expression"]))}


def search_conversations(call: ToolContext, arguments: dict[str, Any]) -> dict[str, Any]:
    from chat.models import Message

    query = arguments["query"]
    found = (
        Message.objects.filter(conversation__owner=call.user, content__icontains=query)
        .select_related("conversation")
        .order_by("-id")[: arguments.get("limit", 5)]
    )
    return {"query": query, "matches": [_match(message, query) for message in found]}


def _match(message: Any, query: str) -> dict[str, Any]:
    at = max(0, message.content.lower().find(query.lower()) - SNIPPET_CHARS // 3)
    return {
        "conversation": message.conversation.display_title,
        "role": message.role,
        "snippet": message.content[at : at + SNIPPET_CHARS],
    }


def write_report(call: ToolContext, arguments: dict[str, Any]) -> dict[str, Any]:
    from agents.models import Artifact

    name = _file_name(arguments["title"])
    artifact, _ = Artifact.objects.update_or_create(run_id=call.run_id, name=name, defaults={"content": arguments["markdown"]})
    return {"artifact": artifact.name, "size": len(artifact.content.encode())}


def _file_name(title: str) -> str:
    stem = "".join(c if c.isalnum() else "-" for c in title.lower()).strip("-")
    return f"{'-'.join(part for part in stem.split('-') if part)[:80] or 'report'}.md"


def send_email(call: ToolContext, arguments: dict[str, Any]) -> dict[str, Any]:
    sent = send_mail(arguments["subject"], arguments["body"], settings.DEFAULT_FROM_EMAIL, [arguments["to"]])
    return {"sent": bool(sent), "to": arguments["to"]}
