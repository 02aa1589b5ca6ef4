"""The built-in tools' work, all offline: arithmetic, the user's own conversations, the files
attached to the run's conversation, reports, e-mail.

Each takes the call (who, which run and step) and arguments already checked against its schema,
and returns JSON for the model. Ownership is decided here by the caller's user, never by an id the
model supplies.
"""

from typing import Any

from django.conf import settings
from django.core.mail import send_mail

from agents.calculator import as_text
from agents.calculator import calculate as evaluate
from agents.schema import InvalidArguments
from agents.tools import ToolContext

SNIPPET_CHARS = 240
READ_CHARS = 8_000  # a read_file call without max_chars: a few pages, well inside a context window


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


def list_files(call: ToolContext, arguments: dict[str, Any]) -> dict[str, Any]:
    from chat.actions import ActionError
    from chat.uploads import uploads_for

    try:
        files = list(uploads_for(call.user, call.conversation_id))
    except ActionError:
        files = []  # a conversation that is not the caller's has no files for them
    return {"files": [_file(upload) for upload in files]}


def _file(upload: Any) -> dict[str, Any]:
    listed = {"name": upload.name, "content_type": upload.content_type, "size": upload.size, "chars": upload.chars}
    return listed | ({"text_truncated": True} if upload.text_truncated else {})


def read_file(call: ToolContext, arguments: dict[str, Any]) -> dict[str, Any]:
    from chat.actions import ActionError
    from chat.uploads import read_upload_text

    offset, max_chars = arguments.get("offset", 0), arguments.get("max_chars", READ_CHARS)
    try:
        return read_upload_text(call.user, call.conversation_id, arguments["name"], offset, max_chars)
    except ActionError as error:
        # An unknown name or an offset past the end: words the model can correct its call by.
        raise InvalidArguments(error.detail or str(error)) from None


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
