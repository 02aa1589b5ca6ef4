"""What of a conversation is sent to the model: the newest turns that fit its context window."""

from collections.abc import Callable, Iterable
from dataclasses import dataclass

Estimate = Callable[[str], int]


@dataclass(frozen=True, slots=True)
class FittedHistory:
    messages: list[dict[str, str]]
    dropped: int  # earlier messages left out

    @property
    def notice(self) -> str:
        if not self.dropped:
            return ""
        noun = "message was" if self.dropped == 1 else "messages were"
        return f"{self.dropped} earlier {noun} left out so the conversation fits the model's context window."


class DoesNotFit(Exception):
    """Even the newest message alone does not fit the window."""


def fit_history(
    turns: Iterable[tuple[str, str]],
    system: str,
    context_window: int,
    max_output_tokens: int,
    estimate: Estimate,
) -> FittedHistory:
    """Keep the system prompt and as many of the newest turns as fit; the last turn must be the user's."""
    merged = _merge_same_role([(role, content) for role, content in turns if content])
    budget = context_window - max_output_tokens - (estimate(system) if system else 0)
    kept: list[dict[str, str]] = []
    for role, content in reversed(merged):
        cost = estimate(content) + 4  # a few tokens of per-message framing
        if cost > budget:
            break
        budget -= cost
        kept.append({"role": role, "content": content})
    if not kept:
        raise DoesNotFit
    kept.reverse()
    while kept and kept[0]["role"] != "user":
        kept.pop(0)  # providers expect the conversation to open with the user
    return FittedHistory(kept, dropped=len(merged) - len(kept))


def _merge_same_role(turns: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """A failed reply leaves two user turns in a row; providers want roles to alternate."""
    merged: list[tuple[str, str]] = []
    for role, content in turns:
        if merged and merged[-1][0] == role:
            merged[-1] = (role, merged[-1][1] + "\n\n" + content)
        else:
            merged.append((role, content))
    return merged
