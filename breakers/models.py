"""What the database keeps of the circuit breakers: the modes admins forced (the truth Redis is
seeded from after it lost its data) and every change of state, as history."""

from django.conf import settings
from django.db import models

# A breaker's states as callers see them (breakers/circuit.py's Gate.state).
CLOSED, OPEN, HALF_OPEN, FORCED_OPEN, FORCED_CLOSED = "closed", "open", "half_open", "forced_open", "forced_closed"
STATES = [
    (CLOSED, "closed"), (OPEN, "open"), (HALF_OPEN, "half-open"), (FORCED_OPEN, "forced open"), (FORCED_CLOSED, "forced closed"),
]
# Longest values: ChatModel.endpoint (30) or its provider's name (20), and ChatModel's model ids (100).
ENDPOINT_MAX, MODEL_MAX = 30, 100


class Breaker(models.Model):
    """One breaker an admin has forced (or put back to automatic): endpoint and model as the
    providers know them. Breakers never forced have no row; their state lives in Redis only."""

    class Mode(models.TextChoices):
        AUTOMATIC = "auto", "automatic"
        FORCED_OPEN = FORCED_OPEN, "forced open"
        FORCED_CLOSED = FORCED_CLOSED, "forced closed"

    endpoint = models.CharField(max_length=ENDPOINT_MAX)
    model = models.CharField(max_length=MODEL_MAX)
    mode = models.CharField(max_length=16, choices=Mode.choices, default=Mode.AUTOMATIC)
    changed_at = models.DateTimeField(auto_now=True)
    changed_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        verbose_name = "circuit breaker"
        constraints = [models.UniqueConstraint(fields=["endpoint", "model"], name="breakers_one_per_endpoint_model")]
        # The page lists breakers (view); forcing one is a permission of its own, not "change".
        default_permissions = ("view",)
        permissions = [("force_breaker", "Can force a circuit breaker open or closed, or back to automatic")]

    def __str__(self) -> str:
        return f"{self.endpoint} {self.model}"


class BreakerEvent(models.Model):
    """A breaker changed state: written once, by the one process whose call (or admin) changed it."""

    endpoint = models.CharField(max_length=ENDPOINT_MAX)
    model = models.CharField(max_length=MODEL_MAX)
    from_state = models.CharField(max_length=16, choices=STATES)
    to_state = models.CharField(max_length=16, choices=STATES)
    reason = models.CharField(max_length=200)
    failures = models.PositiveIntegerField(default=0, help_text="Failures in the window when it opened (a failed probe: 1).")
    created = models.DateTimeField(auto_now_add=True, db_index=True)
    by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        help_text="The admin who forced the change; empty for the breaker's own transitions.",
    )

    class Meta:
        verbose_name = "breaker event"
        verbose_name_plural = "breaker events"
        ordering = ["-created", "-id"]
        indexes = [models.Index(fields=["endpoint", "model", "created"])]

    def __str__(self) -> str:
        return f"{self.endpoint} {self.model}: {self.from_state} → {self.to_state}"
