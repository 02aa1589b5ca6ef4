"""Support's own marks on a conversation: flags (on it or on one message) and internal notes.
Users never see either; each names who made it and when."""

from typing import Any

from django.utils import timezone

from chat.models import Conversation, Message
from support.models import NOTE_MAX, REASON_MAX, Flag, Note

REASON_MIN = 5  # a reason is a few words, not a keystroke


class Refused(ValueError):
    """Input that cannot be taken; the message says why, in words for the person who typed it."""


def clean_reason(text: str) -> str:
    reason = " ".join(text.split())
    if len(reason) < REASON_MIN:
        raise Refused(f"Give a reason of at least {REASON_MIN} characters.")
    if len(reason) > REASON_MAX:
        raise Refused(f"A reason has at most {REASON_MAX} characters.")
    return reason


def flag(author: Any, conversation: Conversation, reason: str, message_id: str = "") -> Flag:
    """Flag the conversation, or one of its messages when `message_id` is given."""
    message = None
    if message_id:
        if not message_id.isdigit():
            raise Refused("That is not a message of this conversation.")
        message = Message.objects.filter(pk=int(message_id), conversation=conversation).first()
        if message is None:
            raise Refused("That is not a message of this conversation.")
    return Flag.objects.create(
        conversation=conversation, message=message, reason=clean_reason(reason),
        author=author, author_name=author.get_username(),
    )


def clear(author: Any, flag: Flag) -> None:
    """A flag dealt with stays on record, marked cleared by whom; clearing it twice changes nothing."""
    Flag.objects.filter(pk=flag.pk, cleared_at__isnull=True).update(
        cleared_at=timezone.now(), cleared_by=author.get_username()
    )


def note(author: Any, conversation: Conversation, text: str) -> Note:
    body = text.strip()
    if not body:
        raise Refused("A note needs some text.")
    if len(body) > NOTE_MAX:
        raise Refused(f"A note has at most {NOTE_MAX} characters.")
    return Note.objects.create(conversation=conversation, author=author, author_name=author.get_username(), text=body)
