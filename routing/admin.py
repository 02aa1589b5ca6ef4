"""Routing rules in Django admin: ordered, switched on and off, their conditions checked on save
(RouteRule.clean: least ≤ most, a percentage, keywords cleaned, never `auto` as the model)."""

from typing import Any

from django import forms
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from routing.models import RouteRule
from routing.router import forget_cached_rules


class RouteRuleForm(forms.ModelForm):
    class Meta:
        model = RouteRule
        fields = "__all__"
        widgets = {"keywords": forms.Textarea(attrs={"rows": 3, "cols": 60})}


@admin.register(RouteRule)
class RouteRuleAdmin(admin.ModelAdmin):
    """The `auto` model's rules: the first enabled one, by position, whose conditions all hold (an
    empty one always does) and whose model can take the message chooses it; otherwise the cheapest
    model that fits. Each reply names the rule in its Details."""

    form = RouteRuleForm
    list_display = ["position", "name", "enabled", "conditions", "target"]
    list_display_links = ["name"]
    list_editable = ["position", "enabled"]
    list_filter = ["enabled", "target"]
    list_select_related = ["target"]
    search_fields = ["name", "keywords"]
    filter_horizontal = ["plans"]
    fieldsets = [
        (None, {"fields": ["name", "position", "enabled", "target"]}),
        ("Conditions (all that are set must hold)", {"fields": [
            ("min_prompt_tokens", "max_prompt_tokens"), "contains_code", "attachments", "keywords", "plans",
            ("budget_left_below_usd", "budget_left_below_percent"),
        ]}),
    ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[RouteRule]:
        return super().get_queryset(request).prefetch_related("plans")

    @admin.display(description="when")
    def conditions(self, rule: RouteRule) -> str:
        parts = []
        if rule.min_prompt_tokens is not None:
            parts.append(f"prompt ≥ {rule.min_prompt_tokens:,} tokens")
        if rule.max_prompt_tokens is not None:
            parts.append(f"prompt ≤ {rule.max_prompt_tokens:,} tokens")
        if rule.contains_code:
            parts.append("contains code")
        if rule.attachments:
            parts.append(rule.get_attachments_display())
        if rule.keywords:
            parts.append("mentions " + ", ".join(rule.keyword_list()))
        plans = [plan.name for plan in rule.plans.all()]
        if plans:
            parts.append("plan " + " or ".join(plans))
        if rule.budget_left_below_usd is not None:
            parts.append(f"budget left < ${rule.budget_left_below_usd}")
        if rule.budget_left_below_percent is not None:
            parts.append(f"budget left < {rule.budget_left_below_percent} %")
        return "; ".join(parts) or "every message"

    # This process applies an edit at once; the others within PARLEY_LIMITS_CACHE_SECONDS.
    def save_model(self, request: HttpRequest, obj: RouteRule, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        forget_cached_rules()

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        forget_cached_rules()

    def delete_model(self, request: HttpRequest, obj: RouteRule) -> None:
        super().delete_model(request, obj)
        forget_cached_rules()

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[RouteRule]) -> None:
        super().delete_queryset(request, queryset)
        forget_cached_rules()
