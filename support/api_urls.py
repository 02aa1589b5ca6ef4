from django.urls import path

from support import api

urlpatterns = [
    path("messages/<int:pk>/feedback", api.message_feedback, name="api-message-feedback"),
]
