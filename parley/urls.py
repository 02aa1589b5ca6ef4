from django.contrib import admin
from django.http import HttpRequest, HttpResponse, HttpResponsePermanentRedirect
from django.templatetags.static import static
from django.urls import include, path, re_path
from django.views.generic import RedirectView

from billing.admin import usage_view
from support.urls import api_urlpatterns as support_api_urls



def favicon(request: HttpRequest) -> HttpResponse:
    """Browsers ask for /favicon.ico wherever a page names no icon (JSON, downloads)."""
    return HttpResponsePermanentRedirect(static("img/favicon.ico"))


urlpatterns = [
    path("favicon.ico", favicon),
    path("", include("observability.urls")),
    # Before the admin's own URLs, whose catch-all would otherwise answer it with a 404.
    path("admin/usage/", admin.site.admin_view(usage_view), name="admin_usage"),
    # The ledger and cost alerts moved to the billing app: old bookmarks still arrive.
    re_path(
        r"^admin/chat/(?P<page>(?:usagerecord|costalert)/.*)$",
        RedirectView.as_view(url="/admin/billing/%(page)s", permanent=True, query_string=True),
    ),
    path("admin/", admin.site.urls),
    path("v1/", include("gateway.urls")),
    # Before the generic "api/" includes: the protocol doors authenticate themselves (gateway/).
    path("api/ag-ui/", include("gateway.ag_ui_urls")),
    path("api/ai-sdk/", include("gateway.ai_sdk_urls")),
    path("api/", include("chat.api_urls")),
    path("api/", include("agents.api_urls")),
    path("api/", include("sharing.api_urls")),
    path("api/support/", include((support_api_urls, "support_api"))),
    path("api/", include("support.api_urls")),
    path("api/", include("accounts.api_urls")),
    path("accounts/", include("accounts.urls")),
    path("support/", include("support.urls")),
    path("", include("sharing.urls")),
    path("", include("chat.urls")),
]

handler404 = "parley.errors.not_found"
handler500 = "parley.errors.server_error"
