import hashlib
import secrets
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone

from parley import deferred, statements

TOKEN_PREFIX = "prl_"


class Limits(models.Model):
    """The limits a plan sets and a user's override may change; on a plan, empty means no limit."""

    requests_per_minute = models.PositiveIntegerField(null=True, blank=True)
    requests_per_day = models.PositiveIntegerField(null=True, blank=True)
    concurrent_replies = models.PositiveIntegerField(null=True, blank=True)
    tokens_per_day = models.PositiveBigIntegerField(null=True, blank=True)
    tokens_per_month = models.PositiveBigIntegerField(null=True, blank=True)
    cost_per_month = models.DecimalField(
        "cost per month (USD)", max_digits=10, decimal_places=2, null=True, blank=True,
        validators=[MinValueValidator(Decimal(0))],
    )
    max_output_tokens = models.PositiveIntegerField("max output tokens per reply", null=True, blank=True)
    allowed_models = models.ManyToManyField(
        "chat.ChatModel", blank=True, related_name="+", help_text="None chosen: every offered model."
    )
    fallback_model = models.ForeignKey(
        "chat.ChatModel", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        help_text="A cheaper model that replies once the monthly cost passes the threshold below.",
    )
    fallback_at_percent = models.PositiveSmallIntegerField(
        "fallback at % of monthly cost", null=True, blank=True, validators=[MinValueValidator(1), MaxValueValidator(100)],
        help_text="Past this share of the monthly cost budget, use the fallback model instead of refusing.",
    )
    # Each agent run's own ceilings; empty: the site settings' defaults (a plan cannot lift them all).
    run_max_steps = models.PositiveIntegerField("most steps per agent run", null=True, blank=True, validators=[MinValueValidator(1)])
    run_max_seconds = models.PositiveIntegerField(
        "most working seconds per agent run", null=True, blank=True, validators=[MinValueValidator(1)],
        help_text="Time spent waiting for an approval does not count.",
    )
    run_max_tokens = models.PositiveIntegerField("most tokens per agent run", null=True, blank=True, validators=[MinValueValidator(1)])
    run_max_cost = models.DecimalField(
        "most cost per agent run (USD)", max_digits=10, decimal_places=4, null=True, blank=True,
        validators=[MinValueValidator(Decimal(0))],
    )

    LIMIT_FIELDS = (
        "requests_per_minute", "requests_per_day", "concurrent_replies", "tokens_per_day",
        "tokens_per_month", "cost_per_month", "max_output_tokens", "fallback_model_id", "fallback_at_percent",
        "run_max_steps", "run_max_seconds", "run_max_tokens", "run_max_cost",
    )

    class Meta:
        abstract = True


class Plan(Limits):
    """What a group of users may spend. Admins edit plans in Django admin; new sign-ups get the default one."""

    name = models.CharField(max_length=60, unique=True)
    is_default = models.BooleanField(default=False, help_text="New sign-ups get this plan.")
    retention_days = models.PositiveIntegerField(
        "keep conversations for (days)", null=True, blank=True, validators=[MinValueValidator(1)],
        help_text="Conversations of this plan's users are deleted this many days after their last activity;"
        " empty: the site settings' period.",
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @classmethod
    def default(cls) -> "Plan | None":
        return cls.objects.filter(is_default=True).order_by("pk").first()


class User(AbstractUser):
    """Parley's user, with the plan that sets their limits."""

    plan = models.ForeignKey(
        Plan, null=True, blank=True, on_delete=models.PROTECT, related_name="users",
        help_text="Empty: the default plan.",
    )
    suspended = models.BooleanField(default=False, help_text="A suspended user can sign in and read, but gets no new replies.")


class PlanOverride(Limits):
    """One user's exceptions to their plan: an empty field keeps the plan's value (to lift a limit for
    one user, give it a high value); chosen allowed models replace the plan's list."""

    user = models.OneToOneField(User, on_delete=models.CASCADE, related_name="plan_override")

    def __str__(self) -> str:
        return f"Overrides for {self.user}"


def hash_token(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


class ApiToken(models.Model):
    """A personal token for scripted clients; only its hash is stored.

    Its scopes say which doors it opens: `chat` the JSON API and the WebSocket (reading and
    writing), `read` the JSON API's reads alone, `gateway` the protocol doors (the OpenAI- and
    Anthropic-compatible gateway, the AI SDK and AG-UI endpoints). Every request reads the token
    afresh, so a revoked or expired token is refused by every process at once."""

    class Scope(models.TextChoices):
        CHAT = "chat", "Chat: the JSON API and the WebSocket"
        READ = "read", "Read-only: the JSON API's reads"
        GATEWAY = "gateway", "Gateway: OpenAI, Anthropic, AI SDK and AG-UI endpoints"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    token_hash = models.CharField(max_length=64, unique=True)
    prefix = models.CharField(max_length=12, help_text="The first characters, to tell tokens apart.")
    created = models.DateTimeField(default=timezone.now)
    last_used = models.DateTimeField(null=True, blank=True)
    revoked = models.DateTimeField(null=True, blank=True)
    scopes = models.JSONField(default=list, help_text="Any of chat, read and gateway.")
    expires = models.DateTimeField(null=True, blank=True, help_text="Empty: the token does not expire.")
    # Gateway calls are conversations while they run (that is what makes them durable, stoppable
    # and reaped); off, each is deleted once its reply ends, and only its ledger row stays.
    stores_calls = models.BooleanField(
        "store gateway calls", default=False,
        help_text="Keep each gateway call as a conversation that support can review.",
    )
    allowed_origins = models.TextField(
        blank=True, help_text="Web origins (one a line, e.g. https://app.example.com) whose pages may use this token.",
    )

    class Meta:
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @classmethod
    def issue(
        cls, user: User, name: str, scopes: list[str] | None = None, expires: datetime | None = None,
        stores_calls: bool = False, allowed_origins: str = "",
    ) -> tuple["ApiToken", str]:
        """Create a token and return it with the raw secret, which is never stored."""
        raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
        token = cls.objects.create(
            user=user, name=name, token_hash=hash_token(raw), prefix=raw[:10],
            scopes=sorted(set(scopes if scopes is not None else [cls.Scope.CHAT])), expires=expires,
            stores_calls=stores_calls, allowed_origins=allowed_origins,
        )
        return token, raw

    @classmethod
    def find(cls, raw: str) -> "ApiToken | None":
        """The live token a raw secret names, its user loaded; None when it is unknown, revoked,
        expired or its user inactive."""
        if not raw.startswith(TOKEN_PREFIX) or len(raw) > 100:
            return None
        # Every API request and WebSocket handshake asks: precompiled rather than through the ORM.
        token = statements.select_one(cls, {"token_hash": hash_token(raw)}, related="user")
        if not isinstance(token, ApiToken) or not token.is_live or not token.user.is_active:
            return None
        now = timezone.now()
        if token.last_used is None or (now - token.last_used).total_seconds() > 60:
            # A write of its own (a commit) on the deferred threads, not on the database thread
            # every stream shares: nothing waits for it.
            deferred.soon(lambda: statements.update(cls, token.pk, {"last_used": now}), "a token's last use")
            token.last_used = now
        return token

    @classmethod
    def user_for(cls, raw: str) -> User | None:
        token = cls.find(raw)
        return token.user if token is not None else None

    @property
    def is_live(self) -> bool:
        return self.revoked is None and (self.expires is None or self.expires > timezone.now())

    def allows(self, scope: str) -> bool:
        return scope in self.scopes

    def allows_request(self, method: str) -> bool:
        """Whether the JSON API lets this token make a request with this method."""
        if self.allows(self.Scope.CHAT):
            return True
        return method in ("GET", "HEAD", "OPTIONS") and self.allows(self.Scope.READ)

    @property
    def origins(self) -> set[str]:
        return {line.strip().rstrip("/").lower() for line in self.allowed_origins.splitlines() if line.strip()}

    def allows_origin(self, origin: str) -> bool:
        return origin.rstrip("/").lower() in self.origins

    def revoke(self) -> None:
        if self.revoked is None:
            self.revoked = timezone.now()
            self.save(update_fields=["revoked"])


class CounterReset(models.Model):
    """An admin gave a user a fresh start: usage before `at` no longer counts toward the user's
    current minute, day and month. Kept as the audit trail of who did it and why."""

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="counter_resets")
    at = models.DateTimeField(default=timezone.now, db_index=True)
    by = models.ForeignKey(User, null=True, on_delete=models.SET_NULL, related_name="+")
    note = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["-at"]

    def __str__(self) -> str:
        return f"Counters of {self.user} reset at {self.at:%Y-%m-%d %H:%M}"


class SiteSettings(models.Model):
    """The site's switches that admins change without a restart: one row, read fresh where it is used."""

    class SignUp(models.TextChoices):
        OPEN = "open", "Open: anyone may create an account"
        INVITATION = "invitation", "By invitation only"
        CLOSED = "closed", "Closed: no new accounts"

    signup = models.CharField("sign-up", max_length=20, choices=SignUp, default=SignUp.OPEN)
    # Agent runs: the defaults of plans that set no ceiling of their own, and how long a risky
    # step waits for its approval before it counts as rejected.
    run_max_steps = models.PositiveIntegerField("most steps per agent run", default=30, validators=[MinValueValidator(1)])
    run_max_seconds = models.PositiveIntegerField(
        "most working seconds per agent run", default=900, validators=[MinValueValidator(1)],
        help_text="Time spent waiting for an approval does not count.",
    )
    run_max_tokens = models.PositiveIntegerField("most tokens per agent run", default=200_000, validators=[MinValueValidator(1)])
    run_max_cost = models.DecimalField(
        "most cost per agent run (USD)", max_digits=10, decimal_places=4, default=Decimal("1.00"),
        validators=[MinValueValidator(Decimal(0))],
    )
    approval_expiry_minutes = models.PositiveIntegerField(
        "approvals expire after (minutes)", default=1440, validators=[MinValueValidator(1)],
        help_text="A risky step not approved in this time counts as rejected, and its run goes on without it.",
    )
    # Read by the hourly purge (support/retention.py); a plan may set its own period.
    retention_days = models.PositiveIntegerField(
        "keep conversations for (days)", null=True, blank=True, validators=[MinValueValidator(1)],
        help_text="Conversations are deleted, with their messages, files, runs and logs, this many days after their"
        " last activity, unless the owner's plan sets its own period. Empty: kept forever.",
    )

    # Off: logs show a prompt or a reply as a hash and its length (observability/logs.py).
    log_message_text = models.BooleanField(
        "log message text", default=False,
        help_text="Write the text of users' messages and models' replies into the logs, instead of a hash. For"
        " debugging only: the logs then hold what users wrote. Applies within a few seconds.",
    )

    class Meta:
        verbose_name = verbose_name_plural = "site settings"

    def __str__(self) -> str:
        return "Site settings"

    def save(self, *args: Any, **kwargs: Any) -> None:
        self.pk = 1  # there is only ever the one row
        super().save(*args, **kwargs)  # observability/logs.py hears of it (post_save)

    @classmethod
    def current(cls) -> "SiteSettings":
        """The row, or the defaults when admins never saved it (nothing is written on a read)."""
        return cls.objects.filter(pk=1).first() or cls(pk=1)


def new_invitation_code() -> str:
    return secrets.token_urlsafe(12)


def in_two_weeks() -> datetime:
    return timezone.now() + timedelta(days=14)


class Invitation(models.Model):
    """A one-time code that lets one person sign up, also while sign-up is by invitation only."""

    code = models.CharField(max_length=40, unique=True, default=new_invitation_code, editable=False)
    email = models.EmailField(blank=True, help_text="Whom it is for (optional); their account gets this address.")
    created_by = models.ForeignKey(User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created = models.DateTimeField(default=timezone.now)
    expires = models.DateTimeField(default=in_two_weeks)
    used_by = models.ForeignKey(User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"Invitation {self.code[:6]}…" + (f" for {self.email}" if self.email else "")

    def problem(self) -> str | None:
        """Why this invitation cannot be used now, in plain words; None when it can."""
        if self.used_at is not None:
            return "This invitation has already been used."
        if self.expires <= timezone.now():
            return f"This invitation expired on {timezone.localtime(self.expires):%d %B %Y}."
        return None

    def claim(self, user: User) -> bool:
        """Mark it used by `user`; False if another sign-up took it first (one conditional update)."""
        now = timezone.now()
        claimed = Invitation.objects.filter(pk=self.pk, used_at__isnull=True, expires__gt=now).update(
            used_by=user, used_at=now
        )
        return claimed == 1


class AuthEvent(models.Model):
    """A sign-in lock or refused sign-ups, for admins. Failed attempts that lock nothing are not
    stored (Redis counts them), and sign-ups refused for one address are noted once per hour, so
    an attack adds a row per lock rather than per request; rows older than 90 days are dropped."""

    class Kind(models.TextChoices):
        ACCOUNT_AT_ADDRESS = "account_at_address", "Sign-in locked: account at one address"
        ADDRESS = "address", "Sign-in locked: address, for accounts not used there"
        ACCOUNT = "account", "Sign-in locked: account, at addresses not used before"
        SIGNUP = "signup", "Sign-ups refused: address"

    KEEP_DAYS = 90

    at = models.DateTimeField(default=timezone.now, db_index=True)
    kind = models.CharField(max_length=20, choices=Kind)
    username = models.CharField("username tried", max_length=150, blank=True)
    address = models.CharField(max_length=50, help_text="The client's address (an IPv6 client's /64 network).")
    seconds = models.PositiveIntegerField("for (seconds)")

    class Meta:
        ordering = ["-at"]
        verbose_name = "lock or refused sign-up"
        verbose_name_plural = "locks and refused sign-ups"

    def __str__(self) -> str:
        return f"{self.get_kind_display()} ({self.username or self.address}) at {self.at:%Y-%m-%d %H:%M}"

    @classmethod
    def record(cls, kind: str, username: str, address: str, seconds: int) -> "AuthEvent":
        now = timezone.now()
        cls.objects.filter(at__lt=now - timedelta(days=cls.KEEP_DAYS)).delete()
        return cls.objects.create(at=now, kind=kind, username=username[:150], address=address[:50], seconds=seconds)
