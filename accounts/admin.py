from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin
from django.db.models import QuerySet, Sum
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from accounts.models import ApiToken, Plan, PlanOverride, User

LIMIT_FIELDSETS = (
    ("Requests", {"fields": ("requests_per_minute", "requests_per_day", "concurrent_replies")}),
    ("Tokens and cost", {"fields": ("tokens_per_day", "tokens_per_month", "cost_per_month", "max_output_tokens")}),
    ("Models", {"fields": ("allowed_models", "fallback_model", "fallback_at_percent")}),
)


@admin.register(Plan)
class PlanAdmin(admin.ModelAdmin):
    list_display = ["name", "is_default", "requests_per_minute", "requests_per_day", "concurrent_replies",
                    "tokens_per_day", "tokens_per_month", "cost_per_month", "max_output_tokens", "user_count"]
    fieldsets = ((None, {"fields": ("name", "is_default")}), *LIMIT_FIELDSETS)
    filter_horizontal = ["allowed_models"]

    @admin.display(description="users")
    def user_count(self, plan: Plan) -> int:
        return plan.users.count()


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
    actions = ["suspend", "unsuspend"]

    @admin.display(description="usage")
    def usage_summary(self, user: User) -> str:
        if user.pk is None:
            return "–"
        from chat.models import UsageRecord

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
        return format_html("<table><tr><th></th><th>tokens</th><th>cost</th></tr>{}</table>", body)

    @admin.action(description="Suspend: no new replies")
    def suspend(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        count = queryset.update(suspended=True)
        self.message_user(request, f"{count} users suspended.", messages.SUCCESS)

    @admin.action(description="Lift the suspension")
    def unsuspend(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        count = queryset.update(suspended=False)
        self.message_user(request, f"{count} users may use Parley again.", messages.SUCCESS)


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Tokens are issued by their owners; admins may only look and revoke (by setting `revoked`)."""

    list_display = ["name", "user", "prefix", "created", "last_used", "revoked"]
    list_filter = [("revoked", admin.EmptyFieldListFilter)]
    search_fields = ["name", "prefix", "user__username"]
    readonly_fields = ["user", "name", "token_hash", "prefix", "created", "last_used"]
    list_select_related = ["user"]

    def has_add_permission(self, request: object) -> bool:
        # A token made here would have no raw value anyone could ever see.
        return False
