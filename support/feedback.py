"""Users' ratings of replies: a thumb up or down with an optional comment, changed or taken back
by the reply's owner only; read back with a page of messages, and summed per model for admins."""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db.models import Count, Q
from django.utils import timezone

from accounts.models import User
from chat.actions import ActionError, get_message_for
from chat.models import ChatModel, Message
from support.models import COMMENT_MAX, Feedback

RATINGS = {"up": Feedback.Rating.UP, "down": Feedback.Rating.DOWN}
NAMES = {value: name for name, value in RATINGS.items()}
# A reply can be rated once it has ended, however it ended: a failed or stopped one is worth a word too.
RATEABLE = {Message.Status.COMPLETE, Message.Status.FAILED, Message.Status.STOPPED, Message.Status.INTERRUPTED}


def parse_rating(value: object) -> int | None:
    """"up", "down" or null (no rating) from a client; anything else is refused."""
    if value is None:
        return None
    if not isinstance(value, str) or value not in RATINGS:
        raise ActionError("invalid_input", 'rating must be "up", "down" or null.')
    return RATINGS[value]


def clean_comment(value: object) -> str:
    if not isinstance(value, str):
        raise ActionError("invalid_input", "comment must be text.")
    comment = value.strip()
    if len(comment) > COMMENT_MAX:
        raise ActionError("invalid_input", f"The comment is too long: at most {COMMENT_MAX:,} characters.")
    return comment


def rate(user: User, message_id: object, rating: int | None, comment: str | None = None) -> Feedback | None:
    """Rates the user's reply (1 or -1), or takes the rating back (None). `comment` None keeps the
    comment a rating has (switching thumbs keeps what was said); a text replaces it.

    Another user's message is not found, like every lookup of another user's data."""
    message = get_message_for(user, message_id)
    if message.role != Message.Role.ASSISTANT:
        raise ActionError("invalid_input", "Only replies can be rated.")
    if message.status not in RATEABLE:
        raise ActionError("conversation_busy", "That reply is still being written: rate it once it has ended.")
    if rating is None:
        if comment:
            raise ActionError("invalid_input", "A comment needs a rating.")
        Feedback.objects.filter(message=message).delete()
        return None
    if rating not in NAMES:
        raise ActionError("invalid_input", "rating must be 1 (up) or -1 (down).")
    changes: dict[str, Any] = {"rating": rating, "updated": timezone.now()}
    if comment is not None:
        changes["comment"] = clean_comment(comment)
    feedback, _ = Feedback.objects.update_or_create(
        message=message,
        defaults=changes,
        create_defaults={
            **changes, "conversation_id": message.conversation_id, "user": user, "model": _model_of(message),
            "created": changes["updated"], "comment": changes.get("comment", ""),
        },
    )
    return feedback


def _model_of(message: Message) -> str:
    """The model that wrote the reply; a reply that failed before its model was recorded has the conversation's."""
    if message.model:
        return message.model
    return ChatModel.objects.filter(pk=message.conversation.model_id).values_list("name", flat=True).first() or ""


def as_dict(feedback: Feedback | None) -> dict[str, Any] | None:
    """What the API answers a rating with."""
    if feedback is None:
        return None
    return {"rating": NAMES[feedback.rating], "comment": feedback.comment, "updated": feedback.updated.isoformat()}


def of_messages(messages: Iterable[Message]) -> dict[int, dict[str, Any]]:
    """The ratings of a page's replies, by message id, in one query (none when it has no reply)."""
    ids = [message.pk for message in messages if message.role == Message.Role.ASSISTANT]
    if not ids:
        return {}
    rows = Feedback.objects.filter(message_id__in=ids).values_list("message_id", "rating", "comment")
    return {message_id: {"rating": NAMES[rating], "comment": comment} for message_id, rating, comment in rows}


@dataclass(frozen=True, slots=True)
class Row:
    model: str
    up: int
    down: int
    total: int
    comments: int

    @property
    def share_up(self) -> float:
        """Of the ratings, the share of thumbs up (0 to 1)."""
        return self.up / self.total if self.total else 0.0


def summary_by_model(since: datetime | None = None) -> list[Row]:
    """Ratings per model (changed since `since`, when given), most rated first, in one query."""
    feedback = Feedback.objects.all()
    if since is not None:
        feedback = feedback.filter(updated__gte=since)
    rows = (
        feedback.values("model")
        .annotate(
            up=Count("pk", filter=Q(rating=Feedback.Rating.UP)),
            down=Count("pk", filter=Q(rating=Feedback.Rating.DOWN)),
            total=Count("pk"),
            comments=Count("pk", filter=~Q(comment="")),
        )
        .order_by("-total", "model")
    )
    return [Row(**row) for row in rows]
