from typing import Any

from django import template

from support.masking import mask

register = template.Library()


@register.filter
def masked(text: str) -> str:
    """Personal data hidden; the result is still escaped by the template as any text is."""
    return mask(str(text))


LIMIT_WORDS = {
    "requests_per_minute": "{} requests a minute",
    "requests_per_day": "{} requests a day",
    "concurrent_replies": "{} replies at once",
    "tokens_per_day": "{} tokens a day",
    "tokens_per_month": "{} tokens a month",
    "cost_per_month": "${} a month",
    "max_output_tokens": "{} output tokens a reply",
    "fallback_at_percent": "cheaper model from {}% of the budget",
    "allowed_models": "{} models allowed",
}


@register.filter
def limits_text(limits: dict[str, Any]) -> str:
    """The limits a reply was admitted under (chat.Message.limits), in words."""
    words = [f"plan {limits['plan']}" if limits.get("plan") else "no plan"]
    words += [pattern.format(limits[name]) for name, pattern in LIMIT_WORDS.items() if name in limits]
    if len(words) == 1:
        words.append("no limits")
    return " · ".join(words)
