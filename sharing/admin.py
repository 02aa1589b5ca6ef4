"""Share links in Django admin: who shared what and when; admins may revoke a link, not read its token."""

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from sharing.models import SharedLink


@admin.register(SharedLink)
class SharedLinkAdmin(admin.ModelAdmin):
    list_display = ["title", "owner", "show_owner", "created", "revoked_at"]
    list_filter = ["show_owner", ("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["title", "owner__username"]
    list_select_related = ["owner"]
    # The token is a credential for the snapshot: it stays out of the admin too.
    fields = ["title", "owner", "conversation", "show_owner", "owner_name", "created", "revoked_at"]
    readonly_fields = fields
    actions = ["revoke"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    @admin.action(description="Revoke the selected links", permissions=["delete"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[SharedLink]) -> None:
        for link in queryset:
            link.revoke()
