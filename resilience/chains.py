"""A model's failover chain (chat.models.FailoverLink), as offered now.

Read on every send, so kept a few seconds per process: an admin's change reaches every process
within CHAIN_SECONDS, and a send costs no query for it in between.
"""

import time

from chat.models import ChatModel, FailoverLink

CHAIN_SECONDS = 5.0
_chains: dict[int, tuple[float, tuple[ChatModel, ...]]] = {}


def chain_of(model: ChatModel) -> tuple[ChatModel, ...]:
    """The models that answer in `model`'s place, in order: offered ones only, never itself."""
    cached = _chains.get(model.pk)
    if cached is not None and cached[0] > time.monotonic():
        return cached[1]
    links = FailoverLink.objects.filter(model=model).select_related("fallback").order_by("position", "id")
    chain = tuple(link.fallback for link in links if link.fallback.is_offered and link.fallback_id != model.pk)
    _chains[model.pk] = (time.monotonic() + CHAIN_SECONDS, chain)
    return chain


def forget() -> None:
    """Drop the cached chains (an admin saved one; tests)."""
    _chains.clear()
