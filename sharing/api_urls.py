from django.urls import path

from sharing import api

urlpatterns = [
    path("conversations/<int:pk>/share", api.conversation_shares, name="api-conversation-share"),
    path("conversations/<int:pk>/shares", api.conversation_shares, name="api-conversation-shares"),
    path("conversations/<int:pk>/export", api.conversation_export, name="api-conversation-export"),
    path("shares/", api.shares, name="api-shares"),
    path("shares/<int:pk>", api.share_detail, name="api-share"),
]
