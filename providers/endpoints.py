"""Provider endpoints: where a model is served (kind, base URL, key, name), all from the settings.

The existing variables make the built-in endpoints `openai` (OPENAI_API_KEY / OPENAI_BASE_URL) and
`anthropic` (ANTHROPIC_API_KEY / ANTHROPIC_BASE_URL); PARLEY_OPENAI_ENDPOINTS and
PARLEY_ANTHROPIC_ENDPOINTS add more, each with its own key. Every discovered model belongs to one
endpoint (`ChatModel.endpoint`), and its calls go to that endpoint's URL with that endpoint's key.
"""

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from django.conf import settings

OPENAI_URL = "https://api.openai.com/v1"
ANTHROPIC_URL = "https://api.anthropic.com"
# Only these hosts serve the models whose names Parley knows prices for (chat/catalogue.py).
OFFICIAL_HOSTS = {"openai": "api.openai.com", "anthropic": "api.anthropic.com"}


@dataclass(frozen=True, slots=True)
class Endpoint:
    name: str  # as stored with its models: "openai", "anthropic", or a name from the settings
    kind: str  # the adapter that speaks to it: "openai" or "anthropic"
    base_url: str
    api_key: str = field(default="", repr=False)

    @property
    def official(self) -> bool:
        """The provider's own API, where a model's name says which model (and price) it is."""
        parts = urlsplit(self.base_url)
        return parts.scheme == "https" and parts.hostname == OFFICIAL_HOSTS[self.kind]

    @property
    def builtin(self) -> bool:
        return self.name == self.kind

    def model_name(self, remote_id: str) -> str:
        """The model's name in Parley: the provider's own id on a built-in endpoint, else prefixed
        with the endpoint's name, so that two servers may serve models of the same id."""
        return remote_id if self.builtin else f"{self.name}/{remote_id}"


def configured_endpoints() -> list[Endpoint]:
    """Every endpoint the settings turn on, in a stable order: the built-in ones first."""
    found = []
    if settings.OPENAI_API_KEY or settings.OPENAI_BASE_URL:
        found.append(Endpoint("openai", "openai", (settings.OPENAI_BASE_URL or OPENAI_URL).rstrip("/"), settings.OPENAI_API_KEY))
    if settings.ANTHROPIC_API_KEY:
        found.append(
            Endpoint("anthropic", "anthropic", (settings.ANTHROPIC_BASE_URL or ANTHROPIC_URL).rstrip("/"), settings.ANTHROPIC_API_KEY)
        )
    found += [Endpoint(name, "openai", url, key) for name, url, key in settings.PARLEY_OPENAI_ENDPOINTS]
    found += [Endpoint(name, "anthropic", url, key) for name, url, key in settings.PARLEY_ANTHROPIC_ENDPOINTS]
    return found


def endpoint_named(name: str) -> Endpoint | None:
    return next((endpoint for endpoint in configured_endpoints() if endpoint.name == name), None)


def endpoint_names() -> list[str]:
    return [endpoint.name for endpoint in configured_endpoints()]
