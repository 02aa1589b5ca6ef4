"""The ledger and its alerts: one row per model call, and the cost alerts emailed about it.

Moved here from the chat app; the tables keep their names (`chat_usagerecord`, `chat_costalert`).
"""

from decimal import Decimal

from django.conf import settings
from django.db import models
from django.utils import timezone

from chat.models import Conversation, Message


class UsageRecord(models.Model):
    """One model call, as the provider reported it: the ledger that every budget is counted from."""

    class Kind(models.TextChoices):
        REPLY = "reply"
        TITLE = "title"
        AGENT = "agent"  # one model step of an agent run
        SHADOW = "shadow"  # a shadow model's reply to compare, never shown: billed to the site (no user)
        GATEWAY = "gateway"  # a call through the OpenAI- or Anthropic-compatible gateway (gateway/)

    # Empty for a call billed to the site itself (a shadow run, shadows/runner.py): no user pays for it.
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="usage")
    conversation = models.ForeignKey(Conversation, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    message = models.ForeignKey(Message, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    # The API token a call came through (the gateway and the other protocol doors), kept when the
    # token is deleted so the usage page can still name what it was.
    api_token = models.ForeignKey("accounts.ApiToken", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    provider = models.CharField(max_length=20)
    model = models.CharField(max_length=100)
    endpoint = models.CharField(max_length=30, blank=True, help_text="The provider endpoint that served the call.")
    price_unknown = models.BooleanField(
        default=False, help_text="The model had no price when the call was made: billed at 0 until an admin sets one."
    )
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    estimated = models.BooleanField(default=False, help_text="The provider reported no usage (a stopped or failed call): counted from the text.")
    cost_usd = models.DecimalField(max_digits=14, decimal_places=8, default=Decimal("0"))
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    outcome = models.CharField(max_length=12, help_text="complete, stopped, failed or interrupted")
    attempt = models.PositiveSmallIntegerField(
        default=1, help_text="Which provider attempt of the call this is: retries and failovers each get a row of their own.",
    )
    error_code = models.CharField(max_length=40, blank=True, help_text="Why a failed call failed, e.g. overloaded.")
    over_reservation_tokens = models.PositiveIntegerField(
        default=0, help_text="Output tokens the provider reported beyond the most the call reserved (it ignored max_tokens)."
    )
    overspend_alerted = models.BooleanField(default=False, help_text="The admins were emailed about the overspend.")
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "chat_usagerecord"
        ordering = ["-created", "-id"]
        indexes = [models.Index(fields=["user", "created"]), models.Index(fields=["created"])]

    def __str__(self) -> str:
        return f"{self.kind} {self.model} for {self.user_id}: {self.total_tokens} tokens"

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class CostAlert(models.Model):
    """An email to the admins: a user, or the whole site, passed a share of a monthly budget.
    The unique key makes it one per threshold per month, however many processes notice."""

    class Scope(models.TextChoices):
        USER = "user"
        SITE = "site"

    key = models.CharField(max_length=80, unique=True)
    scope = models.CharField(max_length=4, choices=Scope.choices)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    period = models.CharField(max_length=6, help_text="The month, as YYYYMM (UTC).")
    threshold = models.PositiveSmallIntegerField(help_text="Percent of the monthly budget.")
    spent_usd = models.DecimalField(max_digits=14, decimal_places=8)
    budget_usd = models.DecimalField(max_digits=12, decimal_places=2)
    recipients = models.TextField(blank=True)
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "chat_costalert"
        ordering = ["-created", "-id"]

    def __str__(self) -> str:
        who = self.user if self.scope == self.Scope.USER else "the site"
        return f"{who} passed {self.threshold} % of the {self.period} budget"
