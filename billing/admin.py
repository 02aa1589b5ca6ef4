"""The ledger and cost alerts in Django admin (view-only), and the admin usage page."""

from collections.abc import Callable
from datetime import date

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils.safestring import SafeString

from accounts.models import User
from billing import charts, quotas, reports
from billing.models import CostAlert, UsageRecord
from parley.admin import ViewOnlyAdmin

USAGE_DAYS = 30


@admin.register(UsageRecord)
class UsageRecordAdmin(ViewOnlyAdmin):
    """The ledger: read-only, written by every model call."""

    # What fits a 1280-px screen beside the filters; the rest is on each row's page and in the filters.
    list_display = ["created", "who", "kind", "model", "tokens", "cost", "outcome", "attempt", "api_token"]
    list_filter = [
        "kind", ("api_token", admin.RelatedOnlyFieldListFilter), "outcome", "attempt", "error_code", "estimated", "price_unknown", "overspend_alerted", "provider", "endpoint", "model",
    ]
    search_fields = ["user__username", "model", "api_token__name", "api_token__prefix"]
    list_select_related = ["user", "api_token"]
    date_hierarchy = "created"

    @admin.display(description="Cost (USD)", ordering="cost_usd")
    def cost(self, entry: UsageRecord) -> str:
        return "0 (price unknown)" if entry.price_unknown else str(entry.cost_usd)

    @admin.display(description="User", ordering="user")
    def who(self, entry: UsageRecord) -> str:
        return str(entry.user) if entry.user_id is not None else "the site (shadow run)"

    @admin.display(description="Tokens (prompt + completion)")
    def tokens(self, entry: UsageRecord) -> str:
        shown = f"{entry.prompt_tokens:,} + {entry.completion_tokens:,}"
        return f"{shown} (estimated)" if entry.estimated else shown

    def get_readonly_fields(self, request: object, obj: UsageRecord | None = None) -> list[str]:
        return [field.name for field in UsageRecord._meta.fields]


def usd(value: float) -> str:
    """Dollars with two to six decimals: model calls often cost a fraction of a cent."""
    if value == 0:
        return "$0"
    if value >= 1:
        return f"${value:,.2f}"
    whole, _, cents = f"{value:.6f}".rstrip("0").partition(".")
    return f"${whole}.{cents.ljust(2, '0')}"


def count(value: float) -> str:
    return f"{value:,.0f}"


def _chosen_user(raw: str) -> tuple[User | None, str]:
    """The user `?user=` names, or an error to show instead of the report."""
    # A long string of digits would overflow the database's integer before it could name anyone.
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 18):
        return None, f"“{raw}” is not a user id: pick a user from the list or the table of top users."
    user = User.objects.filter(pk=int(raw)).first()
    if user is None:
        return None, f"There is no user with id {raw}."
    return user, ""


def _choices(top: list[reports.UserTotal], chosen: User | None) -> list[tuple[int, str]]:
    """The picker lists the top users, and the chosen one even when they are not among them."""
    choices = [(row.user_id, row.username) for row in top]
    if chosen is not None and chosen.pk not in {pk for pk, _ in choices}:
        choices.append((chosen.pk, chosen.username))
    return choices


def _day_chart(
    days: list[date], values: list[float], title: str, axis: Callable[[float], str], tip: Callable[[float], str],
    smallest_step: float | None = None,
) -> SafeString:
    return charts.bar_chart([(day.isoformat(), value) for day, value in zip(days, values, strict=True)],
                            title=title, axis=axis, tip=tip, smallest_step=smallest_step)


def usage_view(request: HttpRequest) -> HttpResponse:
    """The last 30 days of the ledger and of quota refusals, for everyone or for `?user=<id>`."""
    if not request.user.has_perm("billing.view_usagerecord"):
        raise PermissionDenied
    days = reports.last_days(USAGE_DAYS)
    context = {**admin.site.each_context(request), "title": "Usage", "days": days, "first": days[0], "last": days[-1]}
    raw = request.GET.get("user", "").strip()
    user, error = _chosen_user(raw) if raw else (None, "")
    if error:
        return TemplateResponse(request, "admin/usage.html", {**context, "error": error}, status=404)
    user_id = user.pk if user else None
    report = reports.usage_report(days, user_id)
    refusals = reports.refusal_report(days, user_id)
    top = reports.top_users(days)
    context |= {
        "by_token": reports.by_token(days, user_id),
        "chosen": user,
        "report": report,
        "top_users": top,
        "choices": _choices(top, user),
        "refusals": refusals,
        "refused_limits": [(name, quotas.LABELS.get(name, ""), n) for name, n in refusals.by_limit] if refusals else [],
        "tokens_chart": _day_chart(days, [day.tokens for day in report.days], "Tokens per day", count,
                                   lambda v: f"{v:,.0f} tokens", smallest_step=1),
        "cost_chart": _day_chart(days, [float(day.cost) for day in report.days], "Cost per day (USD)", usd, usd),
    }
    if refusals is not None and refusals.total:
        context["refusals_chart"] = _day_chart(days, [n for _, n in refusals.per_day], "Refusals per day", count,
                                               lambda v: f"{v:,.0f} refused", smallest_step=1)
    return TemplateResponse(request, "admin/usage.html", context)


@admin.register(CostAlert)
class CostAlertAdmin(ViewOnlyAdmin):
    """The cost alerts sent: one per user (or the site), threshold and month."""

    list_display = ["created", "scope", "user", "period", "threshold", "spent_usd", "budget_usd", "recipients"]
    list_filter = ["scope", "threshold", "period"]
    search_fields = ["user__username"]
    list_select_related = ["user"]
