from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone

from chat.models import Conversation, Message

REASON_MAX = 500
COMMENT_MAX = 2000
NOTE_MAX = 5000

# The console's permissions, given to the "Support" group by a migration. Admins (superusers) have
# them all; anyone else needs the group or the permission itself.
PERMISSIONS = [
    ("view_transcripts", "Can read transcripts in the support console"),
    ("reveal_personal_data", "Can reveal masked personal data, with a reason"),
    ("export_transcripts", "Can export transcripts and lists"),
    ("annotate_transcripts", "Can flag conversations and messages and write internal notes"),
]
SUPPORT_GROUP = "Support"


class Feedback(models.Model):
    """A user's rating of one assistant message, changeable; support reads it, admins sum it per model."""

    class Rating(models.IntegerChoices):
        UP = 1, "thumbs up"
        DOWN = -1, "thumbs down"

    message = models.OneToOneField(Message, on_delete=models.CASCADE, related_name="feedback")
    # Beside the message so that the console's "negative feedback" filter is one indexed lookup.
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="feedback")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    rating = models.SmallIntegerField(choices=Rating.choices)
    comment = models.TextField(max_length=COMMENT_MAX, blank=True)
    model = models.CharField(max_length=100, help_text="The model that wrote the message, for the summary per model.")
    created = models.DateTimeField(default=timezone.now)
    updated = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name_plural = "feedback"
        indexes = [models.Index(fields=["conversation", "rating"]), models.Index(fields=["model", "rating"])]
        permissions = PERMISSIONS  # the console's permissions live on one model of this app

    def __str__(self) -> str:
        return f"{self.get_rating_display()} on message {self.message_id}"


class Flag(models.Model):
    """Support marks a conversation, or one of its messages, with a reason; users never see it."""

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="support_flags")
    message = models.ForeignKey(Message, null=True, blank=True, on_delete=models.CASCADE, related_name="support_flags")
    reason = models.CharField(max_length=REASON_MAX)
    author = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    author_name = models.CharField(max_length=150, help_text="Kept when the author's account is gone.")
    created = models.DateTimeField(default=timezone.now)
    cleared_at = models.DateTimeField(null=True, blank=True)
    cleared_by = models.CharField(max_length=150, blank=True)

    class Meta:
        indexes = [models.Index(fields=["conversation", "cleared_at"])]

    def __str__(self) -> str:
        return f"flag on conversation {self.conversation_id}: {self.reason[:40]}"


class Note(models.Model):
    """An internal note on a conversation, by support, for support; users never see it."""

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="support_notes")
    author = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    author_name = models.CharField(max_length=150, help_text="Kept when the author's account is gone.")
    text = models.TextField(max_length=NOTE_MAX)
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["conversation", "created"])]

    def __str__(self) -> str:
        return f"note by {self.author_name} on conversation {self.conversation_id}"


class AppendOnlyError(Exception):
    """Raised on any attempt to change or remove the audit record from the app."""


class AuditEventQuerySet(models.QuerySet["AuditEvent"]):
    """Reads only: the record is appended to by `support.audit.record` and nothing else."""

    def update(self, **kwargs: Any) -> int:
        raise AppendOnlyError("The audit record is append-only: its rows cannot be updated.")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise AppendOnlyError("The audit record is append-only: its rows cannot be deleted.")

    def bulk_update(self, objs: Any, fields: Any, batch_size: int | None = None) -> int:
        raise AppendOnlyError("The audit record is append-only: its rows cannot be updated.")

    def bulk_create(self, objs: Any, *args: Any, **kwargs: Any) -> list["AuditEvent"]:
        # Each row is chained to the one before under a lock; a batch would skip both.
        raise AppendOnlyError("Audit rows are appended one at a time, by support.audit.record.")


class AuditEvent(models.Model):
    """One look at transcripts (a view, search, reveal or export), chained to the one before by a
    hash: editing or deleting a row in the database breaks the chain (`manage.py verify_audit`).

    No foreign keys: deleting a user or a conversation must not touch the record."""

    class Action(models.TextChoices):
        LIST = "list", "list"
        VIEW = "view", "view"
        SEARCH = "search", "search"
        REVEAL = "reveal", "reveal"
        EXPORT = "export", "export"
        FLAG = "flag", "flag"
        NOTE = "note", "note"

    at = models.DateTimeField(default=timezone.now)
    actor_id = models.BigIntegerField(null=True, help_text="The user who looked (their id; the account may be gone).")
    actor_name = models.CharField(max_length=150)
    action = models.CharField(max_length=10, choices=Action.choices)
    conversations = models.JSONField(default=list, help_text="The ids of the conversations concerned.")
    query = models.TextField(blank=True, help_text="The search or the filters, as given.")
    reason = models.TextField(blank=True)
    detail = models.JSONField(default=dict)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.actor_name} {self.action} at {self.at:%Y-%m-%d %H:%M:%S}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise AppendOnlyError("The audit record is append-only: a saved row cannot be changed.")
        if not (self.pk and self.hash):
            raise AppendOnlyError("Audit rows are appended by support.audit.record, which chains them.")
        kwargs["force_insert"] = True  # never Django's "update, else insert" for a row with an id
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise AppendOnlyError("The audit record is append-only: its rows cannot be deleted.")


class AuditHead(models.Model):
    """The audit record's last row as of its append, kept beside the record (one row, written in
    the same transaction as each append): a deleted last row leaves no broken link behind it, but
    it leaves the head naming a row that is gone."""

    last_id = models.BigIntegerField(default=0)
    last_hash = models.CharField(max_length=64)

    def __str__(self) -> str:
        return f"audit record head: row {self.last_id}"
