"""What of a conversation is sent to the model: the newest turns that fit its context window."""

from collections.abc import Iterable
from dataclasses import dataclass

from providers.base import estimate_tokens

# What a provider adds around each message of a prompt (its role, separators): a few tokens that
# the text itself does not show. Counted once per message here, where the prompt is fitted, and so
# also in the prompt's reservation, which is the count made here.
MESSAGE_OVERHEAD_TOKENS = 4


@dataclass(frozen=True, slots=True)
class FittedHistory:
    messages: list[dict[str, str]]
    dropped: int  # earlier messages left out
    prompt_estimate: int  # the tokens of what is sent: the system prompt and the kept messages

    @property
    def notice(self) -> str:
        if not self.dropped:
            return ""
        noun = "message was" if self.dropped == 1 else "messages were"
        return f"{self.dropped} earlier {noun} left out so the conversation fits the model's context window."


class DoesNotFit(Exception):
    """Even the newest message alone does not fit the window."""


def message_tokens(content: str) -> int:
    """One message's share of a prompt: its text and its framing."""
    return estimate_tokens(content) + MESSAGE_OVERHEAD_TOKENS


def fit_history(
    turns: Iterable[tuple[str, str]],
    system: str,
    context_window: int,
    max_output_tokens: int,
) -> FittedHistory:
    """Keep the system prompt and as many of the newest turns as fit; the last turn must be the user's."""
    merged = _merge_same_role([(role, content) for role, content in turns if content])
    system_tokens = message_tokens(system) if system else 0
    budget = context_window - max_output_tokens - system_tokens
    kept: list[dict[str, str]] = []
    costs: list[int] = []
    for role, content in reversed(merged):
        cost = message_tokens(content)
        if cost > budget:
            break
        budget -= cost
        kept.append({"role": role, "content": content})
        costs.append(cost)
    if not kept:
        raise DoesNotFit
    kept.reverse()
    costs.reverse()
    while kept and kept[0]["role"] != "user":
        kept.pop(0)  # providers expect the conversation to open with the user
        costs.pop(0)
    return FittedHistory(kept, dropped=len(merged) - len(kept), prompt_estimate=system_tokens + sum(costs))


def _merge_same_role(turns: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """A failed reply leaves two user turns in a row; providers want roles to alternate."""
    merged: list[tuple[str, str]] = []
    for role, content in turns:
        if merged and merged[-1][0] == role:
            merged[-1] = (role, merged[-1][1] + "\n\n" + content)
        else:
            merged.append((role, content))
    return merged
