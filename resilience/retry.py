"""When to try a provider again: exponential backoff with full jitter, the provider's `retry-after`
honoured up to a cap, and a deadline for the whole call.

Full jitter (a delay drawn uniformly between 0 and the exponential step) spreads the retries of many
replies that failed at the same moment, so they do not come back as one burst.
"""

import random
from dataclasses import dataclass

from django.conf import settings

from providers.base import ErrorCode, StreamError


@dataclass(frozen=True, slots=True)
class Policy:
    attempts_per_model: int  # tries of one model before the next in its chain (1: no retry)
    base_seconds: float  # the first backoff step
    max_backoff_seconds: float  # the largest backoff step
    retry_after_cap_seconds: float  # a longer `retry-after` is not waited for: the next model is tried instead
    deadline_seconds: float  # no new attempt starts this long after the call began

    @classmethod
    def from_settings(cls) -> "Policy":
        return cls(
            attempts_per_model=settings.PARLEY_RETRY_ATTEMPTS,
            base_seconds=settings.PARLEY_RETRY_BASE_SECONDS,
            max_backoff_seconds=settings.PARLEY_RETRY_MAX_BACKOFF_SECONDS,
            retry_after_cap_seconds=settings.PARLEY_RETRY_AFTER_CAP_SECONDS,
            deadline_seconds=settings.PARLEY_RETRY_DEADLINE_SECONDS,
        )

    def delay(self, tries: int, error: StreamError, rng: random.Random | None = None) -> float | None:
        """Seconds to wait before trying the same model again after its `tries`-th failure, or
        None when it should not be tried again (a retry-after beyond the cap, a hang)."""
        if tries >= self.attempts_per_model or not error.retryable:
            return None
        if error.retry_after is not None:
            return error.retry_after if error.retry_after <= self.retry_after_cap_seconds else None
        step = min(self.max_backoff_seconds, self.base_seconds * 2 ** (tries - 1))
        return (rng or random).uniform(0, step)


def hung(error: StreamError) -> bool:
    """A model that said nothing until the first-token timeout: trying it again costs a whole
    timeout more, so with another model in the chain that one is tried at once."""
    return error.code == ErrorCode.TIMEOUT
