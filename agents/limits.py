"""The ceilings of one agent run: its plan's (or the user's override's), else the site's defaults.

They are fixed when the run starts and stored with it, so an admin's edit applies to the next run.
Steps count model and tool steps (an approval is a person's, not the run's); working time leaves
out the time a step waited for its approval.
"""

from dataclasses import asdict, dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from accounts.models import SiteSettings
from accounts.plans import EffectiveLimits


@dataclass(frozen=True, slots=True)
class RunLimits:
    max_steps: int
    max_seconds: int
    max_tokens: int
    max_cost: Decimal

    @classmethod
    def of(cls, limits: EffectiveLimits, site: SiteSettings) -> "RunLimits":
        def pick(plan_value: Any, default: Any) -> Any:
            return default if plan_value is None else plan_value

        return cls(
            max_steps=pick(limits.run_max_steps, site.run_max_steps),
            max_seconds=pick(limits.run_max_seconds, site.run_max_seconds),
            max_tokens=pick(limits.run_max_tokens, site.run_max_tokens),
            max_cost=Decimal(pick(limits.run_max_cost, site.run_max_cost)),
        )

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "max_cost": str(self.max_cost)}

    @classmethod
    def from_dict(cls, stored: dict[str, Any]) -> "RunLimits":
        return cls(int(stored["max_steps"]), int(stored["max_seconds"]), int(stored["max_tokens"]), Decimal(stored["max_cost"]))


def working_seconds(started: datetime | None, now: datetime, approval_waits: list[tuple[datetime, datetime | None]]) -> float:
    """Seconds since the run started, less the time its steps waited for a person."""
    if started is None:
        return 0.0
    waited = sum(((decided or now) - asked).total_seconds() for asked, decided in approval_waits)
    return max(0.0, (now - started).total_seconds() - waited)


def exceeded(limits: RunLimits, steps: int, seconds: float, tokens: int, cost: Decimal) -> str:
    """What the run has used up, in plain words, or "" while it may go on."""
    if steps >= limits.max_steps:
        return f"The run reached its limit of {limits.max_steps} steps."
    if seconds >= limits.max_seconds:
        return f"The run reached its limit of {limits.max_seconds} seconds of work."
    if tokens >= limits.max_tokens:
        return f"The run reached its limit of {limits.max_tokens:,} tokens."
    if cost >= limits.max_cost:
        return f"The run reached its cost limit of ${limits.max_cost}."
    return ""
