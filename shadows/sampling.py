"""Which complete replies get a shadow run, decided in the reply's final write (chat/generation.py).

The decision is a stable hash of (config id, message id), not a random draw: the same reply gets
the same answer however often it is asked (a retried final write never makes a second draw), the
tests can name replies that are in or out, each config samples independently of the others, and
raising a config's share only adds replies to its sample, never swaps them.

The final write of every reply passes here, so the enabled configs are read at most once every
CACHE_SECONDS per process (a saved or deleted config clears this process's copy at once); with
none enabled a reply pays one clock read and one dict lookup.
"""

import hashlib
import time
from decimal import Decimal

from django.db.models.signals import post_delete, post_save

from chat.enqueue import enqueue
from chat.models import Message
from parley import deferred
from shadows.models import ShadowConfig

CACHE_SECONDS = 5.0
TASK = "shadows.tasks.run_shadow"

Sampled = tuple[tuple[int, Decimal], ...]  # (config id, percent) of one model's enabled configs
_configs: dict[str, Sampled] = {}
_fresh_until = 0.0


def after_final_write(message_id: int, model_name: str, status: str) -> None:
    """In a reply's final transaction: a complete reply of a shadowed model, if sampled, gets a
    shadow run sent to the worker once the transaction commits (ids only)."""
    if status != Message.Status.COMPLETE:
        return
    for config_id in sampled_configs(message_id, model_name):
        deferred.after_commit(
            lambda config_id=config_id: enqueue(TASK, message_id, config_id, why_it_matters="no shadow for this reply"),
            "shadow run request",
        )


def sampled_configs(message_id: int, model_name: str) -> list[int]:
    """The ids of the enabled configs of `model_name` that sample this reply."""
    return [config_id for config_id, percent in enabled_configs().get(model_name, ()) if is_sampled(message_id, config_id, percent)]


def is_sampled(message_id: int, config_id: int, percent: Decimal) -> bool:
    """Whether a config that samples `percent` % of replies samples this one: the same answer every time."""
    if percent <= 0:
        return False
    if percent >= 100:
        return True
    digest = hashlib.blake2b(f"{config_id}:{message_id}".encode(), digest_size=8).digest()
    # A point in [0, 100) with 2**64 steps: finer than the two decimals a share may have.
    return Decimal(int.from_bytes(digest)) * 100 / 2**64 < percent


def enabled_configs() -> dict[str, Sampled]:
    """The enabled configs with a share above 0, by their real model's name; read again after CACHE_SECONDS."""
    global _configs, _fresh_until
    now = time.monotonic()
    if now < _fresh_until:
        return _configs
    found: dict[str, list[tuple[int, Decimal]]] = {}
    rows = ShadowConfig.objects.filter(enabled=True, sample_percent__gt=0).values_list("id", "model__name", "sample_percent")
    for config_id, model_name, percent in rows.order_by("id"):
        found.setdefault(model_name, []).append((config_id, percent))
    _configs = {name: tuple(configs) for name, configs in found.items()}
    _fresh_until = now + CACHE_SECONDS
    return _configs


def forget_configs(**_: object) -> None:
    """Read the configs again at the next reply: after an admin's change, and between tests."""
    global _fresh_until
    _fresh_until = 0.0


def connect_signals() -> None:
    post_save.connect(forget_configs, sender=ShadowConfig, dispatch_uid="shadows-forget-on-save")
    post_delete.connect(forget_configs, sender=ShadowConfig, dispatch_uid="shadows-forget-on-delete")
