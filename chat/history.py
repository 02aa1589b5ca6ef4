"""What of a conversation is sent to the model: the newest turns that fit its context window.

A turn is `(role, content)`, or `(role, content, attachments)` for a user turn with files
(chat/attachments.py): their tokens count toward the turn's, so the window and the prompt's
reservation account for them.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from providers.base import Attachment, estimate_tokens

Turn = tuple[str, str] | tuple[str, str, tuple[Attachment, ...]]

# What a provider adds around each message of a prompt (its role, separators): a few tokens that
# the text itself does not show. Counted once per message here, where the prompt is fitted, and so
# also in the prompt's reservation, which is the count made here.
MESSAGE_OVERHEAD_TOKENS = 4


@dataclass(frozen=True, slots=True)
class FittedHistory:
    messages: list[dict[str, Any]]
    dropped: int  # earlier messages left out
    prompt_estimate: int  # the tokens of what is sent: the system prompt and the kept messages

    @property
    def notice(self) -> str:
        if not self.dropped:
            return ""
        noun = "message was" if self.dropped == 1 else "messages were"
        return f"{self.dropped} earlier {noun} left out so the conversation fits the model's context window."


class DoesNotFit(Exception):
    """Even the newest message alone does not fit the window: it `needs` tokens, the window has `room`."""

    def __init__(self, needs: int, room: int) -> None:
        super().__init__(f"{needs} tokens, room for {room}")
        self.needs = needs
        self.room = room


def message_tokens(content: str, attachments: tuple[Attachment, ...] = ()) -> int:
    """One message's share of a prompt: its text, its files and its framing."""
    return estimate_tokens(content) + sum(item.tokens for item in attachments) + MESSAGE_OVERHEAD_TOKENS


def fit_history(
    turns: Iterable[Turn],
    system: str,
    context_window: int,
    max_output_tokens: int,
) -> FittedHistory:
    """Keep the system prompt and as many of the newest turns as fit; the last turn must be the user's."""
    merged = _merge_same_role([(turn[0], turn[1], turn[2] if len(turn) > 2 else ()) for turn in turns if turn[1]])
    system_tokens = message_tokens(system) if system else 0
    budget = context_window - max_output_tokens - system_tokens
    kept: list[dict[str, Any]] = []
    costs: list[int] = []
    for role, content, attachments in reversed(merged):
        cost = message_tokens(content, attachments)
        if cost > budget:
            if not kept:
                raise DoesNotFit(cost, max(0, budget))
            break
        budget -= cost
        kept.append({"role": role, "content": content, "attachments": attachments} if attachments else {"role": role, "content": content})
        costs.append(cost)
    if not kept:
        raise DoesNotFit(0, max(0, budget))
    kept.reverse()
    costs.reverse()
    while kept and kept[0]["role"] != "user":
        kept.pop(0)  # providers expect the conversation to open with the user
        costs.pop(0)
    return FittedHistory(kept, dropped=len(merged) - len(kept), prompt_estimate=system_tokens + sum(costs))


def _merge_same_role(
    turns: list[tuple[str, str, tuple[Attachment, ...]]],
) -> list[tuple[str, str, tuple[Attachment, ...]]]:
    """A failed reply leaves two user turns in a row; providers want roles to alternate."""
    merged: list[tuple[str, str, tuple[Attachment, ...]]] = []
    for role, content, attachments in turns:
        if merged and merged[-1][0] == role:
            merged[-1] = (role, merged[-1][1] + "\n\n" + content, merged[-1][2] + attachments)
        else:
            merged.append((role, content, attachments))
    return merged
