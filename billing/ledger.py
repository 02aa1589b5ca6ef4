"""The usage ledger: one row per model call, priced from the model catalogue at the time of the call.

A model whose price is unknown (no admin has set it, and it is not an official API's model of a
known name) is billed at 0 and its rows are flagged `price_unknown`: never another model's price."""

import functools
from dataclasses import dataclass
from decimal import Decimal

from django.db import transaction

from billing import alerts
from billing.models import UsageRecord
from chat.models import Message
from observability import metrics
from parley import statements
from providers.base import estimate_tokens

MILLION = Decimal(1_000_000)


@dataclass(frozen=True, slots=True)
class Pricing:
    """USD per million tokens, copied from the catalogue when the call starts; `known` False bills 0."""

    input_per_million: Decimal = Decimal(0)
    output_per_million: Decimal = Decimal(0)
    known: bool = True

    @classmethod
    def of(cls, input_per_million: Decimal | None, output_per_million: Decimal | None) -> "Pricing":
        """A catalogue row's prices; an empty one makes the price unknown."""
        if input_per_million is None or output_per_million is None:
            return cls(known=False)
        return cls(input_per_million, output_per_million)

    def cost(self, prompt_tokens: int, completion_tokens: int) -> Decimal:
        return (prompt_tokens * self.input_per_million + completion_tokens * self.output_per_million) / MILLION


@dataclass(frozen=True, slots=True)
class Call:
    """Who made a model call and for what; known before the call starts. `user_id` None: the site
    pays for the call (a shadow run), no user."""

    user_id: int | None
    kind: str
    provider: str
    model: str
    pricing: Pricing
    prompt_estimate: int
    conversation_id: int | None = None
    message_id: int | None = None
    reserved_output: int | None = None  # the most output its reservation covers (None: not known)
    endpoint: str = ""  # the provider endpoint that served it (chat.models.ChatModel.endpoint)
    api_token_id: int | None = None  # the API token of a protocol door's call (gateway/)


def billed_tokens(
    call: Call, outcome: str, prompt_tokens: int | None, completion_tokens: int | None, text: str
) -> tuple[int, int, bool]:
    """The prompt and completion tokens a call is billed for, and whether they are estimates.

    The reply's row shows the same numbers (chat/generation.py), so the page and the API never say
    "unknown" where the ledger holds an estimate."""
    estimated = prompt_tokens is None or completion_tokens is None
    if outcome == Message.Status.FAILED and estimated and not text:
        return prompt_tokens or 0, completion_tokens or 0, False
    prompt = prompt_tokens if prompt_tokens is not None else call.prompt_estimate
    completion = completion_tokens if completion_tokens is not None else estimate_tokens(text)
    if completion_tokens is None and call.reserved_output is not None:
        # An estimate reads high beyond ASCII, and the stream was cut at about the reservation.
        completion = min(completion, call.reserved_output)
    return prompt, completion, estimated


def record(
    call: Call, outcome: str, prompt_tokens: int | None, completion_tokens: int | None, text: str,
    duration_ms: int | None, error_code: str = "", attempt: int = 1,
) -> UsageRecord:
    """Write the call to the ledger; tokens the provider did not report are estimated (and marked so).

    An attempt the provider refused before producing anything (it failed with no text and no
    usage) costs nothing: its row keeps the error for support and metrics. Output the provider
    reports beyond the reservation is billed, as it was charged, and recorded as an overspend.
    """
    prompt, completion, estimated = billed_tokens(call, outcome, prompt_tokens, completion_tokens, text)
    over = max(0, completion - call.reserved_output) if call.reserved_output is not None else 0
    entry = UsageRecord(
        user_id=call.user_id, conversation_id=call.conversation_id, message_id=call.message_id, kind=call.kind,
        provider=call.provider, model=call.model, prompt_tokens=prompt, completion_tokens=completion,
        estimated=estimated, cost_usd=call.pricing.cost(prompt, completion), duration_ms=duration_ms, outcome=outcome,
        error_code=error_code[:40], over_reservation_tokens=over, endpoint=call.endpoint,
        price_unknown=not call.pricing.known, attempt=attempt, api_token_id=call.api_token_id,
    )
    statements.insert(entry)  # on every reply's final write: precompiled, like the rest of that path
    # Counted once the row is committed: the counters never hold a call the ledger rolled back.
    transaction.on_commit(functools.partial(
        metrics.billed, entry.provider, entry.model, prompt, completion, entry.cost_usd, entry.error_code,
    ))
    if over:
        alerts.overspent(entry)
    return entry
