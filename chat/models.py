from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone

import providers
from providers.endpoints import endpoint_named, endpoint_names

SYSTEM_PROMPT_MAX = 20_000  # characters


def _served() -> models.Q:
    return (models.Q(endpoint="") | models.Q(endpoint__in=endpoint_names())) & models.Q(
        enabled=True, available=True, provider__in=providers.configured_providers(),
    )


class ModelQuerySet(models.QuerySet["ChatModel"]):
    def offered(self) -> "ModelQuerySet":
        """The models a provider serves now: enabled models of configured providers that their
        endpoint listed at its last refresh (models added by hand, with no endpoint, as their admin
        says). Never the `auto` row, which no provider serves."""
        return self.filter(_served()).order_by("sort_order", "label", "id")

    def pickable(self) -> "ModelQuerySet":
        """What the picker and `GET /api/models` list: the offered models, and the `auto` row
        (routing/) while it is enabled and one of them is there for it to pick. One query."""
        auto = models.Q(provider=providers.AUTO, enabled=True, available=True)
        return self.filter(_served() | (auto & models.Exists(self.model.objects.filter(_served())))).order_by(
            "sort_order", "label", "id",
        )


class ChatModel(models.Model):
    """One entry of the model catalogue: discovered from an endpoint's model list (chat/discovery.py),
    or added by hand. A price left empty is unknown: its calls are billed at 0 and flagged."""

    PROVIDERS = providers.CHOICES

    name = models.CharField(
        max_length=100, unique=True,
        help_text="The model's name in Parley (and its API); a discovered model's id, prefixed by its endpoint's name unless built in.",
    )
    label = models.CharField(max_length=100)
    provider = models.CharField(max_length=20, choices=PROVIDERS)
    endpoint = models.CharField(
        max_length=30, blank=True,
        help_text="The endpoint that lists and serves it (README: openai, anthropic, or a name from PARLEY_OPENAI_ENDPOINTS /"
        " PARLEY_ANTHROPIC_ENDPOINTS). Empty: added by hand, served at its base URL or its provider's default.",
    )
    remote_name = models.CharField(max_length=100, blank=True, help_text="The id its endpoint knows it by; empty: the name.")
    base_url = models.URLField(blank=True, help_text="Overrides its endpoint's URL (or OPENAI_BASE_URL) for this model.")
    available = models.BooleanField(default=True, help_text="Its endpoint listed it at the last refresh (models added by hand: always).")
    last_seen = models.DateTimeField(null=True, blank=True, help_text="When its endpoint last listed it.")
    context_window = models.PositiveIntegerField(default=8192)
    max_output_tokens = models.PositiveIntegerField(default=2048)
    input_price_per_million = models.DecimalField(
        max_digits=10, decimal_places=4, null=True, blank=True, validators=[MinValueValidator(Decimal(0))],
        help_text="USD per million input tokens; empty: unknown (billed at 0, the ledger row flagged).",
    )
    output_price_per_million = models.DecimalField(
        max_digits=10, decimal_places=4, null=True, blank=True, validators=[MinValueValidator(Decimal(0))],
        help_text="USD per million output tokens; empty: unknown (billed at 0, the ledger row flagged).",
    )
    prices_from_list = models.BooleanField(
        default=False, editable=False,
        help_text="The prices came from Parley's list of the official APIs' prices; taken away if its endpoint stops being the official API.",
    )
    enabled = models.BooleanField(default=True)
    is_default = models.BooleanField(default=False)
    supports_vision = models.BooleanField(
        default=False, help_text="The model reads images: messages to it may carry PNG, JPEG, GIF and WebP files."
    )
    sort_order = models.PositiveIntegerField(default=100)
    temperature = models.DecimalField(
        max_digits=3, decimal_places=2, null=True, blank=True, validators=[MinValueValidator(Decimal(0)), MaxValueValidator(Decimal(2))],
        help_text="Sent with every call to it (0: the most deterministic); empty: the provider's default.",
    )
    cache_responses = models.BooleanField(
        default=False,
        help_text="Replay an earlier reply to the exact same request (model, system prompt, messages, sampling) from a cache:"
        " no provider call, no cost. Only deterministic requests (temperature 0) unless “Cache at any temperature” is set.",
    )
    cache_any_temperature = models.BooleanField(
        default=False, help_text="Cache replies of requests at any temperature too (they are then replayed, not sampled again).",
    )

    objects = ModelQuerySet.as_manager()

    class Meta:
        ordering = ["sort_order", "label"]

    def __str__(self) -> str:
        return self.label

    @property
    def is_demo(self) -> bool:
        return self.provider == "demo"

    @property
    def is_auto(self) -> bool:
        """The `auto` row: a router (routing/router.py) picks a real model for each message."""
        return self.provider == providers.AUTO

    @property
    def model_id(self) -> str:
        """What the provider is asked for."""
        return self.remote_name or self.name

    @property
    def price_known(self) -> bool:
        return self.input_price_per_million is not None and self.output_price_per_million is not None

    @property
    def is_offered(self) -> bool:
        """The row-by-row form of `offered()` (of `pickable()` for the `auto` row, whose router
        says so when no model is there to pick), for a model already loaded."""
        if self.is_auto:
            return self.enabled and self.available
        return (
            self.enabled and self.available and self.provider in providers.configured_providers()
            and (not self.endpoint or self.endpoint in endpoint_names())
        )

    def route(self) -> tuple[str, str | None]:
        """Where its calls go and with which key: its endpoint's (None: the adapter's default key)."""
        endpoint = endpoint_named(self.endpoint) if self.endpoint else None
        if endpoint is None:
            return self.base_url, None
        return self.base_url or endpoint.base_url, endpoint.api_key

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.label,
            "provider": self.provider,
            "endpoint": self.endpoint or None,
            "context_window": self.context_window,
            "demo": self.is_demo,
            "vision": self.supports_vision,
            "price_known": None if self.is_auto else self.price_known,  # auto: each reply's chosen model's
            "auto": self.is_auto,
        }


class FailoverLink(models.Model):
    """One step of a model's failover chain: when `model` is unavailable before its first token,
    `fallback` is tried, in `position` order (routing/attempts.py)."""

    model = models.ForeignKey(ChatModel, on_delete=models.CASCADE, related_name="failover_links")
    fallback = models.ForeignKey(ChatModel, on_delete=models.CASCADE, related_name="+")
    position = models.PositiveSmallIntegerField(default=1)

    class Meta:
        ordering = ["model", "position", "id"]
        constraints = [
            models.UniqueConstraint(fields=["model", "fallback"], name="chat_failover_once"),
            models.CheckConstraint(condition=~models.Q(model=models.F("fallback")), name="chat_failover_not_itself"),
        ]

    def __str__(self) -> str:
        return f"{self.model} → {self.fallback}"


class ProviderEndpoint(models.Model):
    """What the last reading of one endpoint's model list found (chat/discovery.py). The endpoints
    themselves come from the settings; a row stays for one no longer configured, as a record."""

    name = models.CharField(max_length=30, unique=True)
    kind = models.CharField(max_length=20, choices=providers.CHOICES)
    base_url = models.URLField()
    ok = models.BooleanField(null=True, help_text="The last reading of its model list worked; unknown before the first.")
    error = models.TextField(blank=True, help_text="Why the last reading failed.")
    checked_at = models.DateTimeField(null=True, blank=True)
    last_ok_at = models.DateTimeField(null=True, blank=True)
    models_listed = models.PositiveIntegerField(default=0, help_text="Chat models it listed at its last good reading.")

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class PromptPreset(models.Model):
    """A system prompt admins offer. Its text lives in its versions: an edit adds one, never
    rewrites an old one (chat/presets.py). A conversation that took it and kept its text as offered
    follows it: each reply gets the version current at the send."""

    name = models.CharField(max_length=100)
    current_version = models.ForeignKey(
        "PromptPresetVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        help_text="The version in force: what its conversations' next replies get.",
    )
    enabled = models.BooleanField(default=True)
    sort = models.PositiveIntegerField(default=100)

    class Meta:
        ordering = ["sort", "name"]

    def __str__(self) -> str:
        return self.name

    def as_dict(self) -> dict[str, Any]:
        """Offered presets only: they have a current version (chat/actions.offered_presets loads it)."""
        version = self.current_version
        return {"id": self.pk, "name": self.name, "text": version.text if version else "", "version": version.number if version else None}


class PromptPresetVersion(models.Model):
    """One text a preset has had, numbered 1, 2, ... in the order they were made. Rows are never
    changed: a rollback adds a version copying an earlier one (`restored_from`)."""

    preset = models.ForeignKey(PromptPreset, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    text = models.TextField(max_length=SYSTEM_PROMPT_MAX)
    created = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        help_text="The admin who made it; empty for the text a preset had before versions.",
    )
    note = models.CharField(max_length=200, blank=True, help_text="What changed, in the admin's words.")
    restored_from = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        help_text="A rollback: the earlier version whose text this one copies.",
    )

    class Meta:
        ordering = ["preset", "-number"]
        constraints = [models.UniqueConstraint(fields=["preset", "number"], name="chat_preset_version_number")]

    def __str__(self) -> str:
        return f"{self.preset} v{self.number}"


NO_TITLE = "New chat"  # what a conversation is called before its first message, everywhere


class Source(models.TextChoices):
    CHAT = "chat", "Chat"
    GATEWAY = "gateway", "OpenAI/Anthropic gateway"
    AI_SDK = "ai_sdk", "AI SDK useChat"
    AG_UI = "ag_ui", "AG-UI"


class Conversation(models.Model):
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversations")
    title = models.CharField(max_length=200, blank=True)
    title_is_auto = models.BooleanField(default=True)
    model = models.ForeignKey(ChatModel, on_delete=models.PROTECT, related_name="+")
    system_prompt = models.TextField(blank=True)
    preset = models.ForeignKey(
        PromptPreset, null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        help_text="The preset the system prompt was taken from, if any.",
    )
    # Set while the conversation follows its preset (its text as offered): the version its last
    # reply got, and `system_prompt` is a copy of its text. Empty for a text edited by hand, which
    # stays the conversation's own (chat/presets.py).
    preset_version = models.ForeignKey(
        PromptPresetVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        help_text="The preset's version the conversation follows (its last reply got it); empty when its text was edited.",
    )
    created = models.DateTimeField(default=timezone.now)
    updated = models.DateTimeField(default=timezone.now, db_index=True)
    archived = models.BooleanField(default=False)
    # The last message of the branch shown (chat/branches.py). Empty while the conversation has one
    # branch: its messages in id order are that branch, as they were before messages could branch.
    current_leaf = models.ForeignKey(
        "Message", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
    )
    # Which door the conversation came through: the chat page (and the JSON API), or one of the
    # protocol doors (gateway/): their conversations stay out of the sidebar.
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.CHAT)
    api_token = models.ForeignKey(
        "accounts.ApiToken", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        help_text="The API token a protocol door's conversation was made with.",
    )
    # The client's own name for it: an AI SDK chat id, an AG-UI thread id. Unique per owner and door.
    external_id = models.CharField(max_length=200, blank=True)
    # A gateway call whose token does not store calls: deleted once its reply has ended.
    discard_when_done = models.BooleanField(default=False)

    class Meta:
        ordering = ["-updated", "-id"]
        # By creation date: the support console's list sorts by it, page after page (keyset).
        indexes = [models.Index(fields=["owner", "archived", "-updated"]), models.Index(fields=["created"], name="chat_conversation_created")]
        constraints = [
            models.UniqueConstraint(
                fields=["owner", "source", "external_id"], condition=~models.Q(external_id=""),
                name="chat_conversation_external_id",
            ),
        ]

    def __str__(self) -> str:
        return self.display_title

    @property
    def display_title(self) -> str:
        return self.title or NO_TITLE

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.pk,
            "title": self.display_title,
            "model": self.model.name,
            "system_prompt": self.system_prompt,
            "preset": self.preset_id,
            # Lists load the version with the conversation (chat/actions.user_conversations).
            "preset_version": self.preset_version.number if self.preset_version_id else None,
            "created": self.created.isoformat(),
            "updated": self.updated.isoformat(),
            "archived": self.archived,
            "source": self.source,
        }


class Message(models.Model):
    class Role(models.TextChoices):
        USER = "user"
        ASSISTANT = "assistant"

    class Status(models.TextChoices):
        QUEUED = "queued"
        STREAMING = "streaming"
        COMPLETE = "complete"
        STOPPED = "stopped"
        FAILED = "failed"
        INTERRUPTED = "interrupted"

    ACTIVE = (Status.QUEUED, Status.STREAMING)

    # Indexed with the id below, which serves lookups by conversation alone as well.
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="messages", db_index=False)
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children")
    role = models.CharField(max_length=10, choices=Role.choices)
    content = models.TextField(blank=True)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.COMPLETE)
    error_code = models.CharField(max_length=32, blank=True)
    error_text = models.TextField(blank=True)
    notice = models.TextField(blank=True, help_text="Said to the user beside the reply, e.g. that old turns were left out.")
    provider = models.CharField(max_length=20, blank=True)
    model = models.CharField(max_length=100, blank=True)
    model_version = models.CharField(max_length=100, blank=True, help_text="The model name the provider reported.")
    # As billed in the ledger: the provider's counts, or estimates where it gave none.
    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    tokens_estimated = models.BooleanField(default=False, help_text="The provider reported no counts: the tokens are estimates.")
    cost_usd = models.DecimalField(max_digits=12, decimal_places=6, null=True, blank=True, help_text="As billed in the ledger.")
    limits = models.JSONField(
        default=dict, blank=True, help_text="The plan and the limits that applied when the reply was admitted (a reply's only).",
    )
    routing = models.JSONField(
        default=dict, blank=True,
        help_text="How a reply's model was chosen and reached: the model asked for, the routing rule, each failed attempt,"
        " a failover and why, a cached reply (routing/attempts.py).",
    )
    tool_calls = models.JSONField(
        default=list, blank=True,
        help_text="The tools a reply called ({id, name, arguments} each): only a gateway call offers tools.",
    )
    ttft_ms = models.PositiveIntegerField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    generator = models.CharField(max_length=64, blank=True, help_text="The web process that runs this generation.")
    quota_claim = models.CharField(
        max_length=120, blank=True,
        help_text="The budget reserved for this reply, so that a reply whose process died can still be charged and settled.",
    )
    last_cursor = models.CharField(max_length=32, blank=True)
    # A user message's files (chat/attachments.py). A file may be attached to several messages; deleting
    # it takes it off them, and their later turns are sent without it.
    attachments = models.ManyToManyField("Upload", blank=True, related_name="messages")
    created = models.DateTimeField(default=timezone.now)
    finished = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["status"], name="chat_message_active", condition=models.Q(status__in=["queued", "streaming"])),
            # A conversation's messages in id order: its history, and its pages newest first (chat/paging.py).
            models.Index(fields=["conversation", "id"], name="chat_message_conversation"),
            # The few replies that went wrong, by conversation: the support console's marks and filter.
            models.Index(
                fields=["conversation"], name="chat_message_went_wrong",
                condition=models.Q(status__in=["failed", "stopped", "interrupted"]),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.role} #{self.pk} ({self.status})"

    @property
    def is_active(self) -> bool:
        return self.status in self.ACTIVE

    def as_dict(self, siblings: list[int] | None = None) -> dict[str, Any]:
        """`siblings`: the ids of the versions of this message (edits, regenerated replies), oldest
        first and itself among them; chat/branches.py computes them for a page in one query."""
        return {
            "id": self.pk,
            "conversation": self.conversation_id,
            "parent": self.parent_id,
            "siblings": siblings if siblings is not None else [self.pk],
            "role": self.role,
            "content": self.content,
            "status": self.status,
            "error": {"code": self.error_code, "text": self.error_text} if self.error_code else None,
            "notice": self.notice or None,
            "routing": self.routing or None,
            "provider": self.provider or None,
            "model": self.model or None,
            "model_version": self.model_version or None,
            "usage": usage_of(self.prompt_tokens, self.completion_tokens, self.tokens_estimated, self.cost_usd),
            "ttft_ms": self.ttft_ms,
            "duration_ms": self.duration_ms,
            "cursor": self.last_cursor or None,
            "attachments": self.attachment_dicts(),
            "created": self.created.isoformat(),
        }

    def attachment_dicts(self) -> list[dict[str, Any]]:
        """A user message's files; lists of messages prefetch them (chat/paging.py), replies have none."""
        if self.role != self.Role.USER:
            return []
        return [upload.as_dict() for upload in self.attachments.all()]


def usage_of(prompt_tokens: int | None, completion_tokens: int | None, estimated: bool, cost: Decimal | None) -> dict[str, Any]:
    """A reply's tokens and cost as the API and the events show them (cost in USD, as text: exact)."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "estimated": estimated,
        "cost_usd": None if cost is None else str(cost.normalize() if cost else Decimal(0)),
    }


class Upload(models.Model):
    """A file a user attached to a conversation (chat/uploads.py checks it and extracts its text).

    The bytes live in the row: a few MiB at most, and nothing to configure or back up beside the
    database. The text is extracted once, at upload, so readers never parse the file again; lists
    leave both columns unread."""

    TEXT = "text/plain"
    MARKDOWN = "text/markdown"
    CSV = "text/csv"
    PDF = "application/pdf"
    PNG = "image/png"
    JPEG = "image/jpeg"
    GIF = "image/gif"
    WEBP = "image/webp"
    CONTENT_TYPES = [
        (TEXT, "Text"), (MARKDOWN, "Markdown"), (CSV, "CSV"), (PDF, "PDF"),
        (PNG, "PNG image"), (JPEG, "JPEG image"), (GIF, "GIF image"), (WEBP, "WebP image"),
    ]
    IMAGES = (PNG, JPEG, GIF, WEBP)

    # The unique (conversation, name) index serves lookups by conversation alone too.
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="uploads", db_index=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="uploads")
    name = models.CharField(max_length=200, help_text="The file's name as the user gave it, made safe; unique in its conversation.")
    content_type = models.CharField(max_length=40, choices=CONTENT_TYPES)
    size = models.PositiveIntegerField(help_text="Bytes.")
    data = models.BinaryField()
    text = models.TextField(blank=True)
    chars = models.PositiveIntegerField(help_text="Characters of the extracted text.")
    text_truncated = models.BooleanField(default=False, help_text="The text was cut at PARLEY_UPLOAD_MAX_TEXT_CHARS.")
    width = models.PositiveIntegerField(null=True, blank=True, help_text="Pixels, for an image.")
    height = models.PositiveIntegerField(null=True, blank=True, help_text="Pixels, for an image.")
    tokens = models.PositiveIntegerField(
        default=0, help_text="What the file adds to a prompt it is attached to (providers.base.estimate_tokens)."
    )
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["id"]
        constraints = [models.UniqueConstraint(fields=["conversation", "name"], name="chat_upload_unique_name")]

    def __str__(self) -> str:
        return self.name

    @property
    def is_image(self) -> bool:
        return self.content_type in self.IMAGES

    def as_dict(self) -> dict[str, Any]:
        """Never the bytes or the text: a list reads neither column."""
        return {
            "id": self.pk,
            "conversation": self.conversation_id,
            "name": self.name,
            "content_type": self.content_type,
            "kind": "image" if self.is_image else "text",
            "size": self.size,
            "chars": self.chars,
            "text_truncated": self.text_truncated,
            "width": self.width,
            "height": self.height,
            "tokens": self.tokens,
            "created": self.created.isoformat(),
        }
