"""What a tool is: what an agent run may call, who may let it, and how risky each call is.

Each tool declares its name, a description for the model, JSON-Schema arguments (checked before it
runs, agents/schema.py), the Django permission it needs (empty: every signed-in user), a risk
level (a `high` call waits for a person's approval), a timeout and whether it has side effects
(those run under an idempotency key the run records first). The model is offered only the tools
its user may use; a call to any other is refused with `ToolRefused` (agents/registry.py).
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from accounts.models import User


@dataclass(frozen=True, slots=True)
class ToolContext:
    """Who calls a tool, for which run and step, with which idempotency key."""

    user: User
    run_id: int
    step_id: int
    conversation_id: int
    idempotency_key: str = ""
    # Long tools call this now and then and stop early when it returns True (the run was cancelled).
    cancelled: Callable[[], bool] = lambda: False


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    title: str  # what the step does, in plain words
    description: str  # what the model reads
    parameters: dict[str, Any]
    run: Callable[[ToolContext, dict[str, Any]], Any]
    permission: str = ""
    risk: Literal["low", "high"] = "low"
    timeout_seconds: float = 20.0
    side_effects: bool = False

    def allowed_for(self, user: User) -> bool:
        return user.is_active and (not self.permission or user.has_perm(self.permission))

    def as_spec(self) -> dict[str, Any]:
        """The provider-neutral declaration the adapters translate (OpenAI `tools`, Anthropic `tools`)."""
        return {"name": self.name, "description": self.description, "parameters": self.parameters}


class ToolRefused(Exception):
    """A tool that does not exist, or that this user may not use; the message is for the model and the page."""
