from django.urls import path

from gateway import ai_sdk

urlpatterns = [
    path("chat", ai_sdk.chat, name="ai-sdk-chat"),
    path("chat/<path:chat_id>/stream", ai_sdk.resume, name="ai-sdk-resume"),
    path("chat/<path:chat_id>/stop", ai_sdk.stop, name="ai-sdk-stop"),
]
