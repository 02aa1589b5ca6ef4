from django.urls import path

from chat import api, sse

urlpatterns = [
    path("conversations/", api.conversations, name="api-conversations"),
    path("conversations/<int:pk>/", api.conversation_detail, name="api-conversation"),
    path("conversations/<int:pk>/messages", api.conversation_messages, name="api-conversation-messages"),
    path("conversations/<int:pk>/uploads", api.conversation_uploads, name="api-conversation-uploads"),
    path("uploads/<int:pk>", api.upload_detail, name="api-upload"),
    path("messages/<int:pk>/edit", api.message_edit, name="api-message-edit"),
    path("messages/<int:pk>/regenerate", api.message_regenerate, name="api-message-regenerate"),
    path("messages/<int:pk>/show", api.message_show, name="api-message-show"),
    path("uploads/<int:pk>/image", api.upload_image, name="api-upload-image"),
    path("messages/<int:pk>/stop", api.message_stop, name="api-message-stop"),
    path("messages/<int:pk>/events", sse.message_events, name="api-message-events"),
    path("models/", api.models, name="api-models"),
    path("prompt-presets/", api.prompt_presets, name="api-prompt-presets"),
    path("usage/", api.usage, name="api-usage"),
]
