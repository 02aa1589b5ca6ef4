"""The one provider registry: the catalogue's choices, which providers the settings turn on, the
run banner, and the adapters, each imported on first use so that unconfigured SDKs never load."""

from dataclasses import dataclass
from functools import cache
from importlib import import_module

from django.conf import settings

from providers.base import Provider, Timeouts


@dataclass(frozen=True, slots=True)
class Registered:
    name: str  # as stored with models, messages and the ledger
    label: str  # as admins pick it in the model catalogue
    adapter: str  # the adapter class's dotted path
    enabled_by: tuple[str, ...]  # settings of which any one, set, offers the provider


REGISTRY = (
    Registered("openai", "OpenAI-compatible", "providers.openai_chat.OpenAIProvider", ("OPENAI_API_KEY", "OPENAI_BASE_URL", "PARLEY_OPENAI_ENDPOINTS")),
    Registered("anthropic", "Anthropic", "providers.anthropic_messages.AnthropicProvider", ("ANTHROPIC_API_KEY", "PARLEY_ANTHROPIC_ENDPOINTS")),
    Registered("demo", "Offline demo", "providers.demo.DemoProvider", ("PARLEY_DEMO_MODEL",)),
)
BY_NAME = {entry.name: entry for entry in REGISTRY}
CHOICES = [(entry.name, entry.label) for entry in REGISTRY]

# The provider of the catalogue's one `auto` row (routing/): a router, not a provider. It has no
# adapter and no setting turns it on, so no call is ever made to it or billed as it; it stays out
# of CHOICES, as admins never give it to a model (and the catalogue's field keeps its choices).
AUTO = "auto"


def configured_providers() -> list[str]:
    return [entry.name for entry in REGISTRY if any(getattr(settings, name) for name in entry.enabled_by)]


@cache
def get_provider(name: str) -> Provider:
    """The shared adapter of the web process's event loop."""
    return new_provider(name)


def new_provider(name: str) -> Provider:
    """A fresh adapter, for callers that run their own short-lived event loop (Celery tasks)."""
    if name == AUTO:
        raise KeyError("The auto model is routed to a real model before any call (routing/router.py); it is never called")
    if name not in BY_NAME:
        raise KeyError(f"Unknown provider {name!r}")
    module_name, _, class_name = BY_NAME[name].adapter.rpartition(".")
    adapter_class = getattr(import_module(module_name), class_name)
    timeouts = Timeouts(
        connect=settings.PROVIDER_CONNECT_TIMEOUT,
        first_token=settings.PROVIDER_FIRST_TOKEN_TIMEOUT,
        idle=settings.PROVIDER_IDLE_TIMEOUT,
    )
    return adapter_class(timeouts=timeouts)
