import secrets
from typing import Any

from django.conf import settings
from django.db import models
from django.urls import reverse
from django.utils import timezone

from chat.models import Conversation

TOKEN_BYTES = 32  # 43 URL-safe characters: not guessable, and nothing in it names the owner or the conversation


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


class SharedLinkQuerySet(models.QuerySet["SharedLink"]):
    def active(self) -> "SharedLinkQuerySet":
        return self.filter(revoked_at__isnull=True)


class SharedLink(models.Model):
    """A conversation as it was when its owner shared it, readable by anyone holding the token.

    The snapshot is a copy: later messages, edits and deletions of the conversation do not reach
    it; deleting the conversation deletes its links."""

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="shared_links")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="shared_links")
    token = models.CharField(max_length=64, unique=True, default=new_token)
    title = models.CharField(max_length=200)
    snapshot = models.JSONField(help_text="The messages as of sharing: role, content, model, created, status.")
    show_owner = models.BooleanField(default=False, help_text="The page names the owner.")
    owner_name = models.CharField(max_length=150, blank=True, help_text="Kept only when the owner chose to be named.")
    created = models.DateTimeField(default=timezone.now)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = SharedLinkQuerySet.as_manager()

    class Meta:
        ordering = ["-created", "-id"]
        indexes = [models.Index(fields=["owner", "revoked_at"], name="sharing_link_owner_active")]

    def __str__(self) -> str:
        return f"{self.title} ({self.token[:8]}…)"

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    def path(self) -> str:
        return reverse("sharing:shared", args=[self.token])

    def revoke(self) -> None:
        if self.revoked_at is None:
            self.revoked_at = timezone.now()
            self.save(update_fields=["revoked_at"])

    def as_dict(self, url: str) -> dict[str, Any]:
        """For the owner's API: `url` is the absolute address, which only the request knows."""
        return {
            "id": self.pk,
            "url": url,
            "conversation": self.conversation_id,
            "title": self.title,
            "messages": len(self.snapshot.get("messages", [])),
            "show_owner": self.show_owner,
            "created": self.created.isoformat(),
            "revoked": self.revoked_at.isoformat() if self.revoked_at else None,
        }
