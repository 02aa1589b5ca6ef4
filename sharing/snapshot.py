"""What a share link and an export hold: a conversation's messages as plain data, taken once."""

from typing import Any

from accounts.models import User
from chat.branches import branch_messages
from chat.models import Conversation, Message

SNAPSHOT_VERSION = 1


def message_record(message: Message) -> dict[str, Any]:
    return {
        "role": message.role,
        "content": message.content,
        "model": message.model or None,
        "created": message.created.isoformat(),
        "status": message.status,
    }


def take_snapshot(conversation: Conversation) -> dict[str, Any]:
    """The messages shown, as they are now. A reply still being written is left out (its text is
    not final); the page says so through `left_out`."""
    shown = branch_messages(conversation)
    finished = [message for message in shown if not message.is_active]
    return {
        "version": SNAPSHOT_VERSION,
        "messages": [message_record(message) for message in finished],
        "left_out": len(shown) - len(finished),
    }


def owner_name(user: User) -> str:
    return (user.get_full_name() or user.get_username())[:150]
