from django.contrib import admin
from django.contrib.auth.admin import UserAdmin

from accounts.models import ApiToken, User

admin.site.register(User, UserAdmin)


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
