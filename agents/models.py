"""Agent runs and their durable steps.

A run is a goal worked on step by step in a Celery worker. Every step (a model call, a tool call,
an approval) is a row committed before the next one starts, so a run resumed on another worker
continues after its last committed step and never repeats a finished one. A side-effecting tool
call records its idempotency key before the effect, so a redelivered step cannot repeat it.
"""

from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone

from chat.models import Conversation


class AgentRun(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        AWAITING_APPROVAL = "awaiting_approval"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"
        INTERRUPTED = "interrupted"

    ACTIVE = (Status.QUEUED, Status.RUNNING, Status.AWAITING_APPROVAL)

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="agent_runs")
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="agent_runs")
    goal = models.TextField()
    model = models.CharField(max_length=100)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED)
    progress = models.PositiveSmallIntegerField(default=0, help_text="0-100")
    current_step = models.CharField(max_length=200, blank=True, help_text="The step under way, in plain words.")
    result = models.TextField(blank=True)
    error_code = models.CharField(max_length=40, blank=True)
    error_text = models.TextField(blank=True)
    tokens = models.PositiveIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=14, decimal_places=8, default=Decimal(0))
    cancel_requested = models.BooleanField(default=False)
    # The run's ceilings, fixed when it starts (agents/limits.py): an admin's later edit of the plan
    # applies to the next run, not to one half done.
    limits = models.JSONField(default=dict, blank=True)
    # The last event written to the run's log (streaming/events.py): a worker that resumes the run
    # continues the count, whatever the log kept.
    event_seq = models.PositiveIntegerField(default=0)
    attempts = models.PositiveSmallIntegerField(default=0, help_text="Times the run was resumed after its worker was lost.")
    task_id = models.CharField(max_length=60, blank=True, help_text="The Celery task that last took it up.")
    created = models.DateTimeField(default=timezone.now)
    updated = models.DateTimeField(default=timezone.now)
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created", "-id"]
        indexes = [models.Index(fields=["owner", "created"]), models.Index(fields=["status"])]
        # Per tool (agents/tools.py): given to a user or a group in Django admin.
        permissions = [("use_email_tool", "Can let agent runs send e-mail (each one approved by the user)")]

    def __str__(self) -> str:
        return f"run {self.pk} ({self.status}): {self.goal[:60]}"

    @property
    def is_active(self) -> bool:
        return self.status in self.ACTIVE

    @property
    def final_cursor(self) -> str:
        return f"{self.event_seq}-1"

    def as_dict(self) -> dict[str, Any]:
        """The run as the API and the page show it; `cursor` is where its log continues after this
        state, so a reader that renders this and attaches there misses and repeats nothing."""
        return {
            "id": self.pk,
            "conversation": self.conversation_id,
            "goal": self.goal,
            "model": self.model,
            "status": self.status,
            "progress": self.progress,
            "current_step": self.current_step,
            "result": self.result,
            "error_code": self.error_code or None,
            "error_text": self.error_text or None,
            "tokens": self.tokens,
            "cost_usd": str(self.cost_usd),
            "limits": self.limits,
            "created": self.created.isoformat(),
            "started": self.started.isoformat() if self.started else None,
            "finished": self.finished.isoformat() if self.finished else None,
            "cursor": self.final_cursor if not self.is_active else f"{self.event_seq}-0",
        }


class AgentStep(models.Model):
    class Kind(models.TextChoices):
        MODEL = "model"
        TOOL = "tool"
        APPROVAL = "approval"

    class Status(models.TextChoices):
        RUNNING = "running"
        AWAITING_APPROVAL = "awaiting_approval"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        REFUSED = "refused"  # a tool the user may not use, or arguments that did not validate
        REJECTED = "rejected"  # a person said no

    run = models.ForeignKey(AgentRun, on_delete=models.CASCADE, related_name="steps")
    index = models.PositiveIntegerField(help_text="The step's place in its run, from 1.")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    title = models.CharField(max_length=200)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.RUNNING)
    tool = models.CharField(max_length=60, blank=True)
    call_id = models.CharField(max_length=100, blank=True, help_text="The model's id for this tool call.")
    arguments = models.JSONField(default=dict, blank=True)
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    text = models.TextField(blank=True, help_text="A model step's text.")
    # Recorded before a side effect: a redelivered step finds it and does not act again.
    idempotency_key = models.CharField(max_length=80, null=True, blank=True, unique=True)
    tokens = models.PositiveIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=14, decimal_places=8, default=Decimal(0))
    # A model step's reservation (billing/quotas.py), stored before the provider is asked, so that a
    # step whose worker died is still charged and its budget settled when the run resumes.
    quota_claim = models.CharField(max_length=120, blank=True)
    decided_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    decided_at = models.DateTimeField(null=True, blank=True)
    note = models.TextField(blank=True, help_text="What the person who decided an approval wrote.")
    expires = models.DateTimeField(null=True, blank=True, help_text="When an approval not given counts as rejected.")
    started = models.DateTimeField(default=timezone.now)
    finished = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["run", "index"]
        constraints = [models.UniqueConstraint(fields=["run", "index"], name="agents_step_unique_index")]

    def __str__(self) -> str:
        return f"step {self.index} of run {self.run_id}: {self.title}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.pk,
            "index": self.index,
            "kind": self.kind,
            "title": self.title,
            "status": self.status,
            "tool": self.tool or None,
            "call_id": self.call_id or None,
            "arguments": self.arguments,
            "result": self.result,
            "error": self.error or None,
            "text": self.text,
            "tokens": self.tokens,
            "cost_usd": str(self.cost_usd),
            "decided_by": self.decided_by.get_username() if self.decided_by_id and self.decided_by else None,
            "decided_at": self.decided_at.isoformat() if self.decided_at else None,
            "note": self.note,
            "expires": self.expires.isoformat() if self.expires else None,
            "started": self.started.isoformat(),
            "finished": self.finished.isoformat() if self.finished else None,
        }


class Artifact(models.Model):
    """A file a run produced (a report), downloadable by the run's owner."""

    run = models.ForeignKey(AgentRun, on_delete=models.CASCADE, related_name="artifacts")
    name = models.CharField(max_length=120)
    content_type = models.CharField(max_length=60, default="text/markdown")
    content = models.TextField()
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "name"], name="agents_artifact_unique_name")]

    def __str__(self) -> str:
        return self.name

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "content_type": self.content_type, "size": len(self.content.encode())}
