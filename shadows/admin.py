"""Shadow configs (edited here) with their compare page, and shadow runs (view-only) in Django admin."""

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from parley.admin import ViewOnlyAdmin
from shadows import compare
from shadows.models import ShadowConfig, ShadowRun

COMPARE_PERMISSION = "shadows.compare_shadows"
PAIRS_PER_PAGE = 20


class _ComparersMayView:
    """Who may compare may also list the configs and runs they compare."""

    def has_view_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return super().has_view_permission(request, obj) or request.user.has_perm(COMPARE_PERMISSION)  # type: ignore[misc]


@admin.register(ShadowConfig)
class ShadowConfigAdmin(_ComparersMayView, admin.ModelAdmin):
    """A shadow per model: what to try, on which share of the complete replies; its compare page."""

    list_display = ["__str__", "model", "shadow_model", "sample_percent", "enabled", "created", "compare_link"]
    list_editable = ["enabled"]
    list_filter = ["enabled", "model"]
    list_select_related = ["model", "shadow_model"]
    fields = ["model", "shadow_model", "system_prompt", "preset_version", "sample_percent", "enabled", "note", "created"]
    readonly_fields = ["created"]

    @admin.display(description="compare")
    def compare_link(self, config: ShadowConfig) -> str:
        return format_html('<a href="{}">Compare runs</a>', reverse("admin:shadows_shadowconfig_compare", args=[config.pk]))

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view(self.compare_view)
        return [path("<int:config_id>/compare/", view, name="shadows_shadowconfig_compare"), *super().get_urls()]

    def compare_view(self, request: HttpRequest, config_id: int) -> HttpResponse:
        """Real and shadow side by side, newest first, a page at a time, under the sample's totals."""
        if not request.user.has_perm(COMPARE_PERMISSION):
            raise PermissionDenied
        config = get_object_or_404(ShadowConfig.objects.select_related("model", "shadow_model"), pk=config_id)
        context = {
            **self.admin_site.each_context(request), "title": f"Compare: {config}", "config": config,
            "opts": self.model._meta,
        }
        raw_page = request.GET.get("page", "1")
        runs = config.runs.select_related("message").order_by("-id")
        paginator = Paginator(runs, PAIRS_PER_PAGE)
        if not (raw_page.isascii() and raw_page.isdigit() and 1 <= int(raw_page) <= max(1, paginator.num_pages)):
            error = f"“{raw_page[:20]}” is not a page of this list: pages go from 1 to {max(1, paginator.num_pages)}."
            return TemplateResponse(request, "admin/shadows/compare.html", {**context, "error": error}, status=404)
        page = paginator.page(int(raw_page))
        context |= {"page": page, "pairs": compare.pairs(page.object_list), "summary": compare.summary(config),
                    "sample_runs": compare.SAMPLE_RUNS}
        return TemplateResponse(request, "admin/shadows/compare.html", context)


@admin.register(ShadowRun)
class ShadowRunAdmin(_ComparersMayView, ViewOnlyAdmin):
    """Every shadow run, as the worker stored it."""

    list_display = ["created", "config", "message_id", "model", "status", "error_code", "completion_tokens", "cost_usd",
                    "ttft_ms", "duration_ms"]
    list_filter = ["status", "error_code", "config"]
    list_select_related = ["config__model", "config__shadow_model"]
    date_hierarchy = "created"

    def get_readonly_fields(self, request: object, obj: ShadowRun | None = None) -> list[str]:
        return [field.name for field in ShadowRun._meta.fields]
