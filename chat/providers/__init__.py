"""A small registry: provider name -> adapter, imported on first use so unconfigured SDKs never load."""

from functools import cache
from importlib import import_module

from django.conf import settings

from chat.providers.base import Provider, Timeouts

ADAPTERS = {
    "openai": "chat.providers.openai_chat.OpenAIProvider",
    "anthropic": "chat.providers.anthropic_messages.AnthropicProvider",
    "demo": "chat.providers.demo.DemoProvider",
}


def configured_providers() -> list[str]:
    names = []
    if settings.OPENAI_API_KEY or settings.OPENAI_BASE_URL:
        names.append("openai")
    if settings.ANTHROPIC_API_KEY:
        names.append("anthropic")
    if settings.PARLEY_DEMO_MODEL:
        names.append("demo")
    return names


@cache
def get_provider(name: str) -> Provider:
    """The shared adapter of the web process's event loop."""
    return new_provider(name)


def new_provider(name: str) -> Provider:
    """A fresh adapter, for callers that run their own short-lived event loop (Celery tasks)."""
    if name not in ADAPTERS:
        raise KeyError(f"Unknown provider {name!r}")
    module_name, _, class_name = ADAPTERS[name].rpartition(".")
    adapter_class = getattr(import_module(module_name), class_name)
    timeouts = Timeouts(
        connect=settings.PROVIDER_CONNECT_TIMEOUT,
        first_token=settings.PROVIDER_FIRST_TOKEN_TIMEOUT,
        idle=settings.PROVIDER_IDLE_TIMEOUT,
    )
    return adapter_class(timeouts=timeouts)
