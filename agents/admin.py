"""Agent runs in Django admin, view-only: runs are changed by their owner and their worker."""

from django.contrib import admin

from agents.models import AgentRun, AgentStep, Artifact
from parley.admin import ViewOnlyAdmin


class AgentStepInline(admin.TabularInline):
    model = AgentStep
    extra = 0
    can_delete = False
    fields = ["index", "kind", "title", "status", "tool", "arguments", "error", "tokens", "cost_usd", "decided_by", "finished"]
    readonly_fields = fields

    def has_add_permission(self, request: object, obj: object = None) -> bool:
        return False


@admin.register(AgentRun)
class AgentRunAdmin(ViewOnlyAdmin):
    list_display = ["created", "owner", "goal", "model", "status", "progress", "tokens", "cost_usd"]
    list_filter = ["status", "model"]
    search_fields = ["owner__username", "goal"]
    list_select_related = ["owner"]
    inlines = [AgentStepInline]


@admin.register(Artifact)
class ArtifactAdmin(ViewOnlyAdmin):
    list_display = ["created", "run", "name", "content_type"]
