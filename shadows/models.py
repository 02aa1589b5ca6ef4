"""Shadow configurations (edited in admin) and the shadow runs they make."""

from decimal import Decimal

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone

from chat.models import SYSTEM_PROMPT_MAX, ChatModel, Conversation, Message


class ShadowConfig(models.Model):
    """A shadow attached to a model: a share of its complete replies is asked again of
    `shadow_model` (or the same model) with `system_prompt` (or the conversation's), never shown."""

    model = models.ForeignKey(
        ChatModel, on_delete=models.CASCADE, related_name="shadow_configs",
        help_text="The real model: its complete replies are sampled.",
    )
    shadow_model = models.ForeignKey(
        ChatModel, null=True, blank=True, on_delete=models.CASCADE, related_name="+",
        help_text="The model to try; empty: the real model again (with the system prompt below).",
    )
    system_prompt = models.TextField(
        blank=True, max_length=SYSTEM_PROMPT_MAX,
        help_text="A system prompt to try instead of the conversation's; empty: the conversation's own.",
    )
    preset_version = models.ForeignKey(
        "chat.PromptPresetVersion", null=True, blank=True, on_delete=models.PROTECT, related_name="+",
        help_text="A version of a prompt preset to try instead of the conversation's system prompt (wins over the text above).",
    )
    sample_percent = models.DecimalField(
        max_digits=5, decimal_places=2, validators=[MinValueValidator(Decimal(0)), MaxValueValidator(Decimal(100))],
        help_text="The share of the model's complete replies shadowed, 0 to 100 (decimals allowed, e.g. 0.5).",
    )
    enabled = models.BooleanField(default=True)
    note = models.TextField(blank=True, help_text="Why this shadow runs: what it should tell before switching.")
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created", "-id"]
        permissions = [("compare_shadows", "Can compare real and shadow replies")]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(sample_percent__gte=0, sample_percent__lte=100), name="shadows_percent_in_range",
            ),
        ]

    def __str__(self) -> str:
        tried = [str(self.shadow_model or self.model)]
        if self.preset_version_id is not None:
            tried.append(f"preset version {self.preset_version}")
        elif self.system_prompt:
            tried.append("another system prompt")
        return f"{self.model} shadowed by {' with '.join(tried)} ({self.percent_label} %)"

    @property
    def percent_label(self) -> str:
        """The share as an admin wrote it: "12.5", "100", not "12.50"."""
        text = f"{Decimal(self.sample_percent):f}"
        return text.rstrip("0").rstrip(".") if "." in text else text

    def clean(self) -> None:
        same_model = self.shadow_model_id is None or self.shadow_model_id == self.model_id
        if same_model and not self.system_prompt.strip() and self.preset_version_id is None:
            raise ValidationError(
                "A shadow must differ from the real call: pick another shadow model, a preset version or a system prompt to try."
            )

    @property
    def model_to_try(self) -> ChatModel:
        return self.shadow_model or self.model

    def prompt_to_try(self, conversation: Conversation) -> str:
        """The system prompt a shadow of a reply in `conversation` is sent: the preset version's, else
        this config's text, else the conversation's own, as the real reply had it."""
        if self.preset_version is not None:
            return self.preset_version.text
        return self.system_prompt or conversation.system_prompt


class ShadowRun(models.Model):
    """One shadow reply beside a real one: never shown to the user, billed to the site (its ledger
    row has no user). Created `running` before the model is asked, one per (message, config), so
    a redelivered task never asks twice."""

    class Status(models.TextChoices):
        RUNNING = "running"
        COMPLETE = "complete"
        FAILED = "failed"

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="+", help_text="The real reply.")
    config = models.ForeignKey(ShadowConfig, on_delete=models.CASCADE, related_name="runs")
    model = models.CharField(max_length=100, help_text="The shadow model's name, as the ledger has it.")
    system_prompt_used = models.TextField(blank=True)
    text = models.TextField(blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RUNNING)
    error_code = models.CharField(max_length=40, blank=True)
    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    estimated = models.BooleanField(default=False, help_text="The provider reported no usage: the tokens are estimates.")
    cost_usd = models.DecimalField(max_digits=14, decimal_places=8, null=True, blank=True, help_text="As billed to the site.")
    ttft_ms = models.PositiveIntegerField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    created = models.DateTimeField(default=timezone.now)
    finished = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [models.UniqueConstraint(fields=["message", "config"], name="shadows_one_run_per_reply")]
        indexes = [models.Index(fields=["config", "-id"], name="shadows_run_by_config")]

    def __str__(self) -> str:
        return f"shadow of reply #{self.message_id} by {self.model} ({self.status})"
