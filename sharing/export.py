"""A conversation as a download for its owner: Markdown of the messages shown, or JSON of them all."""

from dataclasses import dataclass
from typing import Any

import orjson
from django.utils import timezone
from django.utils.text import slugify

from chat.actions import ActionError
from chat.models import Conversation, Message
from chat.branches import branch_messages

FORMATS = ("md", "json")
ROLE_HEADINGS = {Message.Role.USER: "You", Message.Role.ASSISTANT: "Assistant"}


@dataclass(frozen=True, slots=True)
class Export:
    body: bytes
    content_type: str
    filename: str


def export(conversation: Conversation, fmt: object) -> Export:
    if fmt not in FORMATS:
        raise ActionError("invalid_input", "format must be md or json.")
    stem = slugify(conversation.display_title)[:60] or "conversation"
    stem = f"{stem}-{conversation.pk}"
    if fmt == "md":
        return Export(as_markdown(conversation).encode(), "text/markdown; charset=utf-8", f"{stem}.md")
    return Export(orjson.dumps(as_json(conversation), option=orjson.OPT_INDENT_2), "application/json", f"{stem}.json")


def as_markdown(conversation: Conversation) -> str:
    """The messages the page shows, each under a heading of who wrote it. Their text is kept as it
    was written: it is Markdown already."""
    lines = [f"# {conversation.display_title}", "", f"- Model: {conversation.model.label}", f"- Exported: {timezone.now().isoformat()}"]
    if conversation.system_prompt:
        lines += ["", "## System prompt", "", conversation.system_prompt]
    for message in branch_messages(conversation):
        heading = ROLE_HEADINGS.get(message.role, message.role)
        if message.role == Message.Role.ASSISTANT and message.model:
            heading += f" ({message.model})"
        lines += ["", f"## {heading}", "", f"*{message.created.isoformat()}*", "", message.content]
        if message.status != Message.Status.COMPLETE:
            lines += ["", f"*({message.status})*"]
    return "\n".join(lines) + "\n"


def as_json(conversation: Conversation) -> dict[str, Any]:
    """Every message of the conversation with its `parent`, so branches can be rebuilt."""
    return {
        "conversation": {
            "id": conversation.pk,
            "title": conversation.display_title,
            "model": conversation.model.name,
            "system_prompt": conversation.system_prompt,
            "created": conversation.created.isoformat(),
            "updated": conversation.updated.isoformat(),
        },
        "messages": [_message(message) for message in conversation.messages.order_by("id")],
        "exported": timezone.now().isoformat(),
    }


def _message(message: Message) -> dict[str, Any]:
    return {
        "id": message.pk,
        "parent": message.parent_id,
        "role": message.role,
        "content": message.content,
        "status": message.status,
        "model": message.model or None,
        "created": message.created.isoformat(),
        "finished": message.finished.isoformat() if message.finished else None,
        "usage": {"prompt_tokens": message.prompt_tokens, "completion_tokens": message.completion_tokens},
    }
