from django.urls import path

from accounts import api

urlpatterns = [
    path("me/export", api.export_data, name="api-me-export"),
]
