"""Admin pieces shared by the apps, and the admin site itself."""

from django.contrib import admin
from django.http import HttpRequest, HttpResponse

from accounts.forms import AdminSignInForm
from accounts.throttle import refused_status


class ParleyAdminSite(admin.AdminSite):
    """Django's admin site whose log-in page explains a throttled sign-in and answers it with 429.
    (The throttle itself is in the authentication backend, so it holds here as everywhere.)"""

    login_form = AdminSignInForm
    site_header = "Parley admin"
    site_title = "Parley admin"
    index_title = "Plans, people, models and usage"

    def login(self, request: HttpRequest, extra_context: dict[str, object] | None = None) -> HttpResponse:
        return refused_status(request, super().login(request, extra_context))


class ViewOnlyAdmin(admin.ModelAdmin):
    """For records the app writes and nobody edits: ledgers and audit trails."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
