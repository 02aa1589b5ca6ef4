"""The support console's records in Django admin."""

from django.contrib import admin

from parley.admin import ViewOnlyAdmin
from support.models import AuditEvent


@admin.register(AuditEvent)
class AuditEventAdmin(ViewOnlyAdmin):
    """The audit record, read-only for everyone: rows are appended by support.audit.record and
    checked by `manage.py verify_audit`; nobody adds, changes or deletes one here."""

    list_display = ["at", "actor", "action", "conversation_ids", "query", "reason"]
    list_filter = ["action", "at"]
    search_fields = ["actor_name", "query"]
    date_hierarchy = "at"
    fields = [
        "at", "actor_id", "actor_name", "action", "conversations", "query", "reason", "detail", "prev_hash", "hash",
    ]
    readonly_fields = fields

    @admin.display(description="Actor", ordering="actor_name")
    def actor(self, event: AuditEvent) -> str:
        return f"{event.actor_name} (#{event.actor_id})" if event.actor_id is not None else event.actor_name

    @admin.display(description="Conversations")
    def conversation_ids(self, event: AuditEvent) -> str:
        shown = ", ".join(str(pk) for pk in event.conversations[:10])
        more = len(event.conversations) - 10
        return f"{shown} and {more} more" if more > 0 else shown


from support import admin_feedback  # noqa: F401
