from django.urls import path

from support import console_api, views

app_name = "support"

urlpatterns = [
    path("", views.console, name="console"),
    path("export.csv", views.export_list, name="export_list"),
    path("c/<int:pk>/", views.transcript, name="transcript"),
    path("c/<int:pk>/export.<str:kind>", views.export_transcript, name="export"),
    path("c/<int:pk>/messages/<int:message_id>/reveal", views.reveal, name="reveal"),
    path("c/<int:pk>/flags", views.flag, name="flag"),
    path("c/<int:pk>/flags/<int:flag_id>/clear", views.clear_flag, name="clear_flag"),
    path("c/<int:pk>/notes", views.note, name="note"),
]

# Included under /api/support/ (parley/urls.py), where a 404 has the API's error shape.
api_urlpatterns = [
    path("conversations/", console_api.conversations, name="api_conversations"),
    path("conversations/<int:pk>/", console_api.conversation, name="api_conversation"),
]
