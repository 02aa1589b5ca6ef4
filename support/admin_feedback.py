"""Users' feedback in Django admin, view-only: every rating with its comment, filtered by rating
and model, under a summary per model."""

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils.html import format_html

from parley.admin import ViewOnlyAdmin
from support import feedback
from support.models import Feedback


@admin.register(Feedback)
class FeedbackAdmin(ViewOnlyAdmin):
    list_display = ["message_link", "user", "model", "rating", "comment", "updated"]
    list_filter = ["rating", "model"]
    search_fields = ["comment", "model", "user__username"]
    list_select_related = ["user"]
    date_hierarchy = "updated"
    ordering = ["-updated"]
    fields = ["message_link", "conversation", "user", "model", "rating", "comment", "created", "updated"]
    readonly_fields = fields

    @admin.display(description="message", ordering="message")
    def message_link(self, obj: Feedback) -> str:
        return format_html('<a href="{}">#{}</a>', reverse("admin:chat_message_change", args=[obj.message_id]), obj.message_id)

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, object] | None = None) -> HttpResponse:
        # Over all ratings, whatever the filters below show: one aggregate query.
        extra_context = {**(extra_context or {}), "summary": feedback.summary_by_model()}
        return super().changelist_view(request, extra_context)
