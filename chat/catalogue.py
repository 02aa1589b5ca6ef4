"""The models Parley knows before any endpoint is asked: the offline demo model, and the prices of
the official APIs' models by their exact names.

Every other model comes from an endpoint's own list (chat/discovery.py). A known price applies
only to a model that the official api.openai.com or api.anthropic.com lists under exactly that
name: a local server may call its model anything, and its calls must not be billed at another
model's price. Admins set or change prices in Django admin.
"""

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

DEMO_NAME = "parley-demo"


@dataclass(frozen=True, slots=True)
class Known:
    label: str
    context_window: int
    max_output_tokens: int
    input_per_million: Decimal
    output_per_million: Decimal
    sort_order: int  # ahead of the rest of an official list (100), so that the first is a sensible default


KNOWN = {
    "gpt-4.1-mini": Known("GPT-4.1 mini", 1_047_576, 4096, Decimal("0.40"), Decimal("1.60"), 10),
    "gpt-4.1": Known("GPT-4.1", 1_047_576, 4096, Decimal("2.00"), Decimal("8.00"), 11),
    "gpt-4o-mini": Known("GPT-4o mini", 128_000, 4096, Decimal("0.15"), Decimal("0.60"), 12),
    "claude-sonnet-4-5": Known("Claude Sonnet 4.5", 200_000, 4096, Decimal("3.00"), Decimal("15.00"), 20),
    "claude-haiku-4-5": Known("Claude Haiku 4.5", 200_000, 4096, Decimal("1.00"), Decimal("5.00"), 21),
}


def known_for(kind: str, official: bool, remote_id: str) -> Known | None:
    """The known price of a model, only where the official API of its kind lists it by that name."""
    known = KNOWN.get(remote_id) if official else None
    if known is None:
        return None
    return known if remote_id.startswith("claude-") == (kind == "anthropic") else None

# The models above that read images (ChatModel.supports_vision); the demo acknowledges them.
VISION_MODELS = ("parley-demo", "gpt-4.1-mini", "gpt-4.1", "gpt-4o-mini", "claude-sonnet-4-5", "claude-haiku-4-5")


def seed(chat_model_class: Any) -> None:
    """The demo model (offered when PARLEY_DEMO_MODEL is on); it costs nothing, says so, and reads images."""
    # Migration 0002 seeds through its historical model, from before the vision flag (0014 sets it there).
    has_vision = any(field.name == "supports_vision" for field in chat_model_class._meta.get_fields())
    chat_model_class.objects.get_or_create(
        name=DEMO_NAME,
        defaults={
            "label": "Parley demo (offline)",
            "provider": "demo",
            "context_window": 8192,
            "max_output_tokens": 1024,
            "input_price_per_million": Decimal(0),
            "output_price_per_million": Decimal(0),
            "sort_order": 0,
            **({"supports_vision": True} if has_vision else {}),
        },
    )
