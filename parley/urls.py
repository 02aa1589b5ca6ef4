from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include("chat.api_urls")),
    path("accounts/", include("accounts.urls")),
    path("", include("chat.urls")),
]

handler404 = "chat.api.not_found"
handler500 = "chat.api.server_error"
