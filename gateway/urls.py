from django.urls import path

from gateway import anthropic_api, openai_api

urlpatterns = [
    path("chat/completions", openai_api.chat_completions, name="gateway-chat-completions"),
    path("models", openai_api.models, name="gateway-models"),
    path("models/<path:name>", openai_api.model, name="gateway-model"),
    path("messages", anthropic_api.messages, name="gateway-messages"),
    path("messages/count_tokens", anthropic_api.count_tokens, name="gateway-count-tokens"),
]
