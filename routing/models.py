"""Routing rules for the `auto` model, as admins write them, and the catalogue's `auto` row."""

from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

import providers
from accounts.models import Plan
from chat.models import ChatModel
from routing import detect

AUTO_NAME = "auto"


def seed_auto(chat_model_class: Any) -> None:
    """The catalogue's `auto` row: listed first in the picker; no provider, no prices, no context
    window of its own (each message's chosen model has them). "Reads images" lets a message carry
    them: the router then picks a model that reads them, or says that none can."""
    chat_model_class.objects.get_or_create(
        name=AUTO_NAME,
        defaults={
            "label": "Auto (picks a model for each message)",
            "provider": providers.AUTO,
            "context_window": 0,
            "max_output_tokens": 0,
            "supports_vision": True,
            "sort_order": 0,
        },
    )


class RouteRule(models.Model):
    """One routing rule: when all its conditions hold for a message sent to `auto` (an empty
    condition always holds), its model answers, if that model can (routing/router.py). Rules are
    tried in `position` order; the first that applies wins."""

    class Attachments(models.TextChoices):
        FILES = "files", "has files (any kind)"
        IMAGES = "images", "has images"

    position = models.PositiveIntegerField(default=100, help_text="Rules are tried from the lowest position up.")
    name = models.CharField(max_length=80, unique=True, help_text="Shown with each reply it chose a model for.")
    enabled = models.BooleanField(default=True)
    min_prompt_tokens = models.PositiveIntegerField(
        "prompt at least (tokens)", null=True, blank=True,
        help_text="The prompt's estimated tokens: system prompt, earlier turns and files included.",
    )
    max_prompt_tokens = models.PositiveIntegerField("prompt at most (tokens)", null=True, blank=True)
    contains_code = models.BooleanField(
        "message contains code", default=False,
        help_text="A fenced ``` block, a traceback, or at least two lines that are clearly code (routing/detect.py).",
    )
    attachments = models.CharField("message", max_length=10, choices=Attachments.choices, blank=True)
    plans = models.ManyToManyField(Plan, blank=True, related_name="+", help_text="None chosen: any plan.")
    budget_left_below_usd = models.DecimalField(
        "monthly budget left below (USD)", max_digits=10, decimal_places=2, null=True, blank=True,
        validators=[MinValueValidator(Decimal(0))],
        help_text="Holds only for users whose plan has a monthly cost budget.",
    )
    budget_left_below_percent = models.PositiveSmallIntegerField(
        "monthly budget left below (%)", null=True, blank=True, validators=[MaxValueValidator(100)],
        help_text="Holds only for users whose plan has a monthly cost budget.",
    )
    keywords = models.TextField(
        blank=True,
        help_text="The message holds any of these as whole words, in any case; one per line or separated by commas.",
    )
    target = models.ForeignKey(
        ChatModel, on_delete=models.PROTECT, related_name="+", limit_choices_to=~models.Q(provider=providers.AUTO),
        verbose_name="model", help_text="Answers when the rule applies, if offered, in the user's plan, able to read"
        " the message's images and large enough for its prompt; otherwise the next rule is tried.",
    )

    class Meta:
        ordering = ["position", "id"]

    def __str__(self) -> str:
        return self.name

    def keyword_list(self) -> list[str]:
        return [keyword for keyword in self.keywords.split("\n") if keyword]

    def clean(self) -> None:
        errors: dict[str, str] = {}
        self.name = " ".join(self.name.split())
        if self.min_prompt_tokens is not None and self.max_prompt_tokens is not None and self.min_prompt_tokens > self.max_prompt_tokens:
            errors["max_prompt_tokens"] = f"At most {self.max_prompt_tokens:,} tokens is below the least, {self.min_prompt_tokens:,}."
        try:
            self.keywords = "\n".join(detect.clean_keywords(self.keywords))
        except ValueError as wrong:
            errors["keywords"] = str(wrong)
        if self.target_id is not None and ChatModel.objects.filter(pk=self.target_id, provider=providers.AUTO).exists():
            errors["target"] = "Auto cannot be a rule's model: pick the model that should answer."
        if errors:
            raise ValidationError(errors)
