"""The models Parley offers out of the box; admins edit prices and add models in Django admin."""

from decimal import Decimal
from typing import Any

# name, label, provider, context window, max output, $/M in, $/M out, default, order
CATALOGUE = [
    ("parley-demo", "Parley demo (offline)", "demo", 8192, 1024, "0", "0", True, 0),
    ("gpt-4.1-mini", "GPT-4.1 mini", "openai", 1_047_576, 4096, "0.40", "1.60", False, 10),
    ("gpt-4.1", "GPT-4.1", "openai", 1_047_576, 4096, "2.00", "8.00", False, 11),
    ("gpt-4o-mini", "GPT-4o mini", "openai", 128_000, 4096, "0.15", "0.60", False, 12),
    ("claude-sonnet-4-5", "Claude Sonnet 4.5", "anthropic", 200_000, 4096, "3.00", "15.00", False, 20),
    ("claude-haiku-4-5", "Claude Haiku 4.5", "anthropic", 200_000, 4096, "1.00", "5.00", False, 21),
]

# The models above that read images (ChatModel.supports_vision); the demo acknowledges them.
VISION_MODELS = ("parley-demo", "gpt-4.1-mini", "gpt-4.1", "gpt-4o-mini", "claude-sonnet-4-5", "claude-haiku-4-5")


def seed(chat_model_class: Any) -> None:
    # Migration 0002 seeds through its historical model, from before the vision flag (0014 sets it there).
    has_vision = any(field.name == "supports_vision" for field in chat_model_class._meta.get_fields())
    for name, label, provider, window, max_out, price_in, price_out, default, order in CATALOGUE:
        vision = {"supports_vision": name in VISION_MODELS} if has_vision else {}
        chat_model_class.objects.get_or_create(
            name=name,
            defaults={
                "label": label,
                "provider": provider,
                "context_window": window,
                "max_output_tokens": max_out,
                "input_price_per_million": Decimal(price_in),
                "output_price_per_million": Decimal(price_out),
                "is_default": default,
                "sort_order": order,
                **vision,
            },
        )
