"""The usage ledger: one row per model call, priced from the model catalogue at the time of the call."""

from dataclasses import dataclass
from decimal import Decimal

from chat.models import UsageRecord
from parley import statements

MILLION = Decimal(1_000_000)


@dataclass(frozen=True, slots=True)
class Pricing:
    """USD per million tokens, copied from the catalogue when the call starts."""

    input_per_million: Decimal = Decimal(0)
    output_per_million: Decimal = Decimal(0)

    def cost(self, prompt_tokens: int, completion_tokens: int) -> Decimal:
        return (prompt_tokens * self.input_per_million + completion_tokens * self.output_per_million) / MILLION


def estimate_tokens(text: str) -> int:
    """For calls that ended before the provider reported usage: about four characters a token for
    ASCII, and about a token a character for the rest (as chat.providers.base estimates prompts)."""
    return (len(text) + 3) // 4 + (len(text.encode()) - len(text)) // 2


@dataclass(frozen=True, slots=True)
class Call:
    """Who made a model call and for what; known before the call starts."""

    user_id: int
    kind: str
    provider: str
    model: str
    pricing: Pricing
    prompt_estimate: int
    conversation_id: int | None = None
    message_id: int | None = None


def record(
    call: Call, outcome: str, prompt_tokens: int | None, completion_tokens: int | None, text: str, duration_ms: int | None
) -> UsageRecord:
    """Write the call to the ledger; tokens the provider did not report are estimated (and marked so)."""
    estimated = prompt_tokens is None or completion_tokens is None
    prompt = prompt_tokens if prompt_tokens is not None else call.prompt_estimate
    completion = completion_tokens if completion_tokens is not None else estimate_tokens(text)
    entry = UsageRecord(
        user_id=call.user_id, conversation_id=call.conversation_id, message_id=call.message_id, kind=call.kind,
        provider=call.provider, model=call.model, prompt_tokens=prompt, completion_tokens=completion,
        estimated=estimated, cost_usd=call.pricing.cost(prompt, completion), duration_ms=duration_ms, outcome=outcome,
    )
    statements.insert(entry)  # on every reply's final write: precompiled, like the rest of that path
    return entry
