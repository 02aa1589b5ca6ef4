from typing import Any

from django import template

from accounts.models import Plan
from support.listing import plan_label
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


@register.filter
def routing_text(routing: dict[str, Any]) -> str:
    """How a reply's model was chosen and reached (chat.Message.routing), in words: the routing rule
    of `auto`, a cached reply, a failover and why, the attempts that failed before the first token."""
    words = []
    if routing.get("rule"):
        why = f": {routing['why']}" if routing.get("why") else ""
        words.append(f"{routing.get('requested') or 'auto'} chose it by rule “{routing['rule']}”{why}")
    if routing.get("cached"):
        words.append("replayed from the response cache (no provider call, billed nothing)")
    failover = routing.get("failover")
    if failover:
        words.append(f"failed over from {failover.get('from')} to {failover.get('to')}: {failover.get('why')}")
    attempts = routing.get("attempts") or []
    if attempts:
        each = ", ".join(f"#{a.get('attempt')} {a.get('model')} {a.get('code')}" for a in attempts)
        words.append(f"{len(attempts)} attempt{'s' if len(attempts) != 1 else ''} failed before the first token ({each}), billed nothing")
    return " · ".join(words)


KIND_WORDS = {
    "email": "an e-mail address", "phone": "a phone number", "card": "a card number", "iban": "an IBAN",
    "ip": "an IP address", "secret": "a secret",
}


@register.filter
def kinds_text(kinds: list[str]) -> str:
    """The kinds of personal data a search left out, in words: "an e-mail address and a phone number"."""
    words = [KIND_WORDS.get(kind, kind) for kind in kinds]
    return " and ".join([", ".join(words[:-1]), words[-1]]) if len(words) > 1 else "".join(words)


@register.filter
def plan_name(user: Any) -> str:
    """The user's plan; a user without one has the default plan, as every limit does."""
    return plan_label(user, Plan.default())
