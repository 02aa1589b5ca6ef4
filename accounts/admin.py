import redis
from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.auth.admin import UserAdmin
from django.db.models import Q, QuerySet, Sum
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from accounts import throttle
from accounts.models import ApiToken, AuthEvent, CounterReset, Invitation, Plan, PlanOverride, SiteSettings, User
from parley.admin import ViewOnlyAdmin

LIMIT_FIELDSETS = (
    ("Requests", {"fields": ("requests_per_minute", "requests_per_day", "concurrent_replies")}),
    ("Tokens and cost", {"fields": ("tokens_per_day", "tokens_per_month", "cost_per_month", "max_output_tokens")}),
    ("Models", {"fields": ("allowed_models", "fallback_model", "fallback_at_percent")}),
    ("Agent runs", {"fields": ("run_max_steps", "run_max_seconds", "run_max_tokens", "run_max_cost"),
                    "description": "Ceilings of each run; empty: the site settings' defaults."}),
)


@admin.register(Plan)
class PlanAdmin(admin.ModelAdmin):
    list_display = ["name", "is_default", "requests_per_minute", "requests_per_day", "concurrent_replies",
                    "tokens_per_day", "tokens_per_month", "cost_per_month", "max_output_tokens", "user_count"]
    fieldsets = ((None, {"fields": ("name", "is_default")}), *LIMIT_FIELDSETS, ("Retention", {"fields": ("retention_days",)}))
    filter_horizontal = ["allowed_models"]

    @admin.display(description="users")
    def user_count(self, plan: Plan) -> int:
        return plan.users.count()


class ChangePlanForm(forms.Form):
    plan = forms.ModelChoiceField(Plan.objects.all(), required=False, empty_label="Default plan")

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        default = Plan.default()
        if default is not None:
            self.fields["plan"].empty_label = f"Default plan (now {default.name})"


def users_count(count: int) -> str:
    return f"{count} user" if count == 1 else f"{count} users"


def plan_name(plan: Plan | None) -> str:
    return plan.name if plan is not None else "default plan"


class PlanOverrideInline(admin.StackedInline):
    model = PlanOverride
    can_delete = True
    extra = 0
    max_num = 1
    verbose_name = verbose_name_plural = "Overrides of the plan (empty fields keep the plan's value)"
    fieldsets = LIMIT_FIELDSETS
    filter_horizontal = ["allowed_models"]


@admin.register(User)
class ParleyUserAdmin(UserAdmin):
    list_display = ["username", "email", "plan", "suspended", "is_staff", "last_login"]
    list_filter = ["plan", "suspended", "is_staff", "is_superuser", "is_active"]
    list_select_related = ["plan"]
    fieldsets = (*UserAdmin.fieldsets, ("Plan and usage", {"fields": ("plan", "suspended", "usage_summary")}))
    readonly_fields = ["usage_summary"]
    inlines = [PlanOverrideInline]
    actions = ["change_plan", "reset_usage_counters", "suspend", "unsuspend"]

    @admin.display(description="usage")
    def usage_summary(self, user: User) -> str:
        if user.pk is None:
            return "–"
        from billing.models import UsageRecord

        now = timezone.localtime()
        day = now.replace(hour=0, minute=0, second=0, microsecond=0)
        month = day.replace(day=1)
        records = UsageRecord.objects.filter(user=user)
        rows = []
        for label, since in (("Today", day), ("This month", month)):
            totals = records.filter(created__gte=since).aggregate(
                prompt=Sum("prompt_tokens"), completion=Sum("completion_tokens"), cost=Sum("cost_usd")
            )
            rows.append((label, (totals["prompt"] or 0) + (totals["completion"] or 0), f"{totals['cost'] or 0:.4f}"))
        per_model = (
            records.filter(created__gte=month).values("model")
            .annotate(tokens=Sum("prompt_tokens") + Sum("completion_tokens"), cost=Sum("cost_usd")).order_by("-cost")
        )
        rows += [(f"This month, {row['model']}", row["tokens"], f"{row['cost']:.4f}") for row in per_model]
        body = format_html_join("", "<tr><td>{}</td><td>{}</td><td>${}</td></tr>", rows)
        return format_html(
            '<table><tr><th></th><th>tokens</th><th>cost</th></tr>{}</table><p><a href="{}?user={}">Usage per day</a></p>',
            body, reverse("admin_usage"), user.pk,
        )

    @admin.action(description="Change plan…", permissions=["change"])
    def change_plan(self, request: HttpRequest, queryset: QuerySet[User]) -> TemplateResponse | None:
        # The changelist posts here first (show the form), then the form posts back with "apply".
        form = ChangePlanForm(request.POST if "apply" in request.POST else None)
        if not form.is_valid():
            context = {
                **self.admin_site.each_context(request),
                "title": "Change plan", "opts": self.opts, "form": form,
                "users": queryset.select_related("plan").order_by("username"),
                "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            }
            return TemplateResponse(request, "admin/accounts/change_plan.html", context)
        plan = form.cleaned_data["plan"]
        changed = 0
        for user in queryset.select_related("plan"):
            if user.plan_id == (plan.pk if plan else None):
                continue
            old = user.plan
            user.plan = plan
            user.save(update_fields=["plan"])
            self.log_change(request, user, f"Changed plan: {plan_name(old)} → {plan_name(plan)}")
            changed += 1
        self.message_user(request, f"{users_count(changed)} moved to the {plan_name(plan)}"
                          f"{'' if plan is None else ' plan'}.", messages.SUCCESS)
        return None

    @admin.action(description="Reset usage counters", permissions=["change"])
    def reset_usage_counters(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        from billing.quotas import reset_counters

        users = list(queryset)
        unreachable = 0
        for user in users:
            try:
                reset_counters(user, by=request.user, note="From the user list in admin")  # type: ignore[arg-type]
                self.log_change(request, user, "Reset usage counters")
            except redis.RedisError:
                # The reset is recorded before Redis is asked, so the ledger already starts afresh;
                # only the live counters Redis holds could not be dropped.
                unreachable += 1
                self.log_change(request, user, "Reset usage counters (Redis unreachable: live counters kept)")
        if unreachable:
            self.message_user(
                request, f"Resets of {users_count(unreachable)} were recorded, but Redis could not be reached to drop their "
                "live counters: try again when it is back.", messages.ERROR,
            )
        if len(users) > unreachable:
            self.message_user(request, f"Usage counters of {users_count(len(users) - unreachable)} reset.", messages.SUCCESS)

    @admin.action(description="Suspend: no new replies", permissions=["change"])
    def suspend(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        count = self._set_suspended(request, queryset, True)
        self.message_user(request, f"{users_count(count)} suspended.", messages.SUCCESS)

    @admin.action(description="Lift the suspension", permissions=["change"])
    def unsuspend(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        count = self._set_suspended(request, queryset, False)
        self.message_user(request, f"{users_count(count)} may use Parley again.", messages.SUCCESS)

    def _set_suspended(self, request: HttpRequest, queryset: QuerySet[User], suspended: bool) -> int:
        """Change only those not already so, each with an entry in the admin log."""
        users = list(queryset.exclude(suspended=suspended))
        queryset.filter(pk__in=[user.pk for user in users]).update(suspended=suspended)
        for user in users:
            self.log_change(request, user, "Suspended" if suspended else "Lifted the suspension")
        return len(users)


class ScopeFilter(admin.SimpleListFilter):
    title = "scope"
    parameter_name = "scope"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [(value, value) for value in ApiToken.Scope.values]

    def queryset(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> QuerySet[ApiToken]:
        # Scopes are a short JSON list: a containment test that reads the same on SQLite and PostgreSQL.
        value = self.value()
        return queryset.filter(scopes__icontains=f'"{value}"') if value in ApiToken.Scope.values else queryset


class StateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("live", "Live"), ("expired", "Expired"), ("revoked", "Revoked")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> QuerySet[ApiToken]:
        now = timezone.now()
        live = Q(revoked__isnull=True) & (Q(expires__isnull=True) | Q(expires__gt=now))
        return {
            "live": queryset.filter(live),
            "expired": queryset.filter(revoked__isnull=True, expires__lte=now),
            "revoked": queryset.filter(revoked__isnull=False),
        }.get(self.value() or "", queryset)


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Tokens are issued by their owners; admins may only look and revoke. The secret is never
    stored, and its hash is not shown either: the prefix tells tokens apart."""

    list_display = ["name", "user", "prefix", "scope_list", "state", "expires", "last_used", "created", "stores_calls"]
    list_filter = [StateFilter, ScopeFilter, "stores_calls"]
    search_fields = ["name", "prefix", "user__username"]
    fields = ["user", "name", "prefix", "scopes", "expires", "stores_calls", "allowed_origins", "created", "last_used", "revoked"]
    readonly_fields = fields
    list_select_related = ["user"]
    actions = ["revoke"]

    @admin.display(description="scopes")
    def scope_list(self, token: ApiToken) -> str:
        return ", ".join(token.scopes) or "none"

    @admin.display(description="state")
    def state(self, token: ApiToken) -> str:
        if token.revoked is not None:
            return f"revoked {timezone.localtime(token.revoked):%Y-%m-%d %H:%M}"
        return "live" if token.is_live else "expired"

    @admin.action(description="Revoke: refused at once", permissions=["change"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        tokens = list(queryset.filter(revoked__isnull=True))
        for token in tokens:
            token.revoke()
            self.log_change(request, token, "Revoked")
        self.message_user(request, f"{len(tokens)} token{'' if len(tokens) == 1 else 's'} revoked.", messages.SUCCESS)

    def has_add_permission(self, request: HttpRequest) -> bool:
        # A token made here would have no raw value anyone could ever see.
        return False


@admin.register(CounterReset)
class CounterResetAdmin(ViewOnlyAdmin):
    """The audit trail of counter resets: made by the user list's action, never by hand."""

    list_display = ["user", "at", "by", "note"]
    list_select_related = ["user", "by"]
    search_fields = ["user__username", "by__username", "note"]
    date_hierarchy = "at"


@admin.register(SiteSettings)
class SiteSettingsAdmin(admin.ModelAdmin):
    """One row: the list goes straight to it. Changes apply from the next request."""

    fields = ["signup", "run_max_steps", "run_max_seconds", "run_max_tokens", "run_max_cost", "approval_expiry_minutes",
              "retention_days", "log_message_text"]

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, object] | None = None) -> HttpResponse:
        site, _ = SiteSettings.objects.get_or_create(pk=1)
        return HttpResponseRedirect(reverse("admin:accounts_sitesettings_change", args=[site.pk]))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Invitation)
class InvitationAdmin(admin.ModelAdmin):
    list_display = ["__str__", "email", "created_by", "created", "expires", "used_by", "used_at"]
    list_filter = [("used_at", admin.EmptyFieldListFilter)]
    list_select_related = ["created_by", "used_by"]
    search_fields = ["code", "email", "used_by__username"]
    fields = ["email", "expires", "link", "created_by", "created", "used_by", "used_at"]
    readonly_fields = ["link", "created_by", "created", "used_by", "used_at"]

    @admin.display(description="sign-up link")
    def link(self, invitation: Invitation) -> str:
        if invitation.pk is None:
            return "Shown once saved."
        url = f"{settings.PARLEY_PUBLIC_URL}{reverse('signup')}?invite={invitation.code}"
        return format_html('<a href="{}">{}</a><br>Code: <code>{}</code>', url, url, invitation.code)

    def save_model(self, request: HttpRequest, obj: Invitation, form: forms.ModelForm, change: bool) -> None:
        if not change:
            obj.created_by = request.user  # type: ignore[assignment]
        super().save_model(request, obj, form, change)


@admin.register(AuthEvent)
class AuthEventAdmin(ViewOnlyAdmin):
    """Sign-in locks and refused sign-ups, written by the throttle (accounts/throttle.py)."""

    list_display = ["at", "kind", "username", "address", "seconds"]
    list_filter = ["kind"]
    search_fields = ["username", "address"]
    date_hierarchy = "at"
    actions = ["lift"]

    @admin.action(description="Lift the lock (and forget its failures)", permissions=["lift"])
    def lift(self, request: HttpRequest, queryset: QuerySet[AuthEvent]) -> None:
        events = list(queryset)
        lifted = 0
        try:
            for event in events:
                throttle.lift(event)
                lifted += 1
        except redis.RedisError:
            self.message_user(request, f"Redis could not be reached: {lifted} of {len(events)} lifted. "
                              "Try the others again when it is back.", messages.ERROR)
            return
        self.message_user(request, f"{lifted} lock{'' if lifted == 1 else 's'} lifted.", messages.SUCCESS)

    def has_lift_permission(self, request: HttpRequest) -> bool:
        # Ending a lock decides who may sign in: for those who may change users.
        return request.user.has_perm("accounts.change_user")
