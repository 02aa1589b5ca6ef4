"""What a run's committed steps say to the model, and what it asked for that has no answer yet.

A model step that succeeded is an assistant turn with its tool calls; each tool step, and each
approval a person rejected, is the tool result the model reads. A call without one is pending:
the run's next step works on it before the model is asked again.
"""

from dataclasses import dataclass
from typing import Any

import orjson

from agents.models import AgentStep

FINISHED_TOOL = (AgentStep.Status.SUCCEEDED, AgentStep.Status.FAILED, AgentStep.Status.REFUSED)


@dataclass(frozen=True, slots=True)
class PendingCall:
    call_id: str
    name: str
    arguments: str  # as the model wrote them: JSON, not yet checked


def messages(goal: str, steps: list[AgentStep]) -> list[dict[str, Any]]:
    """The run as provider-neutral turns (providers/base.py): the goal, then every answered step."""
    turns: list[dict[str, Any]] = [{"role": "user", "content": goal}]
    for step in steps:
        if step.kind == AgentStep.Kind.MODEL and step.status == AgentStep.Status.SUCCEEDED:
            calls = (step.result or {}).get("tool_calls", [])
            turns.append({"role": "assistant", "content": step.text, "tool_calls": calls} if calls else
                         {"role": "assistant", "content": step.text})
        elif answered(step):
            turns.append({"role": "tool", "tool_call_id": step.call_id, "content": tool_content(step)})
    return turns


def answered(step: AgentStep) -> bool:
    """A step that gives its call's result: a finished tool step, or an approval refused."""
    if step.kind == AgentStep.Kind.TOOL:
        return step.status in FINISHED_TOOL
    return step.kind == AgentStep.Kind.APPROVAL and step.status == AgentStep.Status.REJECTED


def tool_content(step: AgentStep) -> str:
    if step.kind == AgentStep.Kind.APPROVAL:
        note = f" Their note: {step.note}" if step.note else ""
        return f"The user did not approve this call, so it was not made.{note}"
    if step.status == AgentStep.Status.SUCCEEDED:
        return orjson.dumps(step.result).decode()
    return f"Error: {step.error}"


def pending_calls(steps: list[AgentStep]) -> list[PendingCall]:
    """The last model step's tool calls that no later step answered, in the model's order."""
    last_model = next((s for s in reversed(steps) if s.kind == AgentStep.Kind.MODEL), None)
    if last_model is None or last_model.status != AgentStep.Status.SUCCEEDED:
        return []
    done = {s.call_id for s in steps if s.index > last_model.index and answered(s)}
    return [
        PendingCall(call["id"], call["name"], call["arguments"])
        for call in (last_model.result or {}).get("tool_calls", [])
        if call["id"] not in done
    ]


def parsed_arguments(raw: str) -> object:
    """The model's arguments as JSON, or the raw text (which then fails validation, in words)."""
    try:
        return orjson.loads(raw or "{}")
    except orjson.JSONDecodeError:
        return raw
