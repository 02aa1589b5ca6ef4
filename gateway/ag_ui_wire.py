"""AG-UI's wire format (protocol 1.0, the `@ag-ui/core` schemas): `RunAgentInput` read into
Parley's terms, and an agent run's log (streaming/events.py, `run_*` types) written as AG-UI events.

An AG-UI run is a segment of a Parley run: the first one from its start, each resumed one from the
approval that ended the one before (a Parley run that asks for approval ends its AG-UI run with an
interrupt outcome; the answer starts a new AG-UI run that continues it). `Translator` is fed every
event of the Parley run from its first and emits only its segment's AG-UI events: it is a pure
function of the log, so the same log always gives the same events in the same order, which is what
lets a client resume at an event's number (gateway/ag_ui.py) with nothing lost or repeated.
"""

import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson

from chat.actions import ActionError

PROTOCOL_VERSION = "1.0"
MAX_ID_CHARS = 200  # Conversation.external_id holds a thread id
INTERRUPT_RE = re.compile(r"^parley-run-([0-9]{1,19})-step-([0-9]{1,9})$")
APPROVAL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "decision": {"enum": ["approve", "reject"]},
        "note": {"type": "string", "maxLength": 2000},
    },
    "required": ["decision"],
}
ROLES = {"developer", "system", "assistant", "user", "tool", "activity", "reasoning"}


# Input ---------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Answer:
    """A resume entry: the decision on the approval that an interrupt stood for."""

    run: int
    step: int
    decision: str  # "approve" or "reject"
    note: str
    abandoned: bool  # the client gave up on the interrupt (status "cancelled")


@dataclass(frozen=True, slots=True)
class RunInput:
    thread_id: str
    run_id: str
    goal: str  # the last user message's text; "" when the input resumes a run
    model: str | None  # forwardedProps.model: a Parley model name
    answer: Answer | None


def read_input(body: bytes) -> RunInput:
    """A `RunAgentInput` checked as far as Parley reads it; ActionError("invalid_input") says what is wrong."""
    try:
        data = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        raise ActionError("invalid_json", "The body is not valid JSON: send a RunAgentInput object.") from None
    if not isinstance(data, dict):
        raise _invalid("The body must be a RunAgentInput object.")
    thread_id, run_id = _identifier(data, "threadId"), _identifier(data, "runId")
    messages = data.get("messages")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise _invalid("messages must be a list of message objects.")
    for index, message in enumerate(messages):
        if not isinstance(message.get("id"), str) or message.get("role") not in ROLES:
            raise _invalid(f"messages[{index}] needs an id (a string) and a role ({', '.join(sorted(ROLES))}).")
    for name in ("tools", "context"):
        if data.get(name) is not None and not isinstance(data[name], list):
            raise _invalid(f"{name} must be a list.")
    props = data.get("forwardedProps")
    model = props.get("model") if isinstance(props, dict) else None
    if model is not None and not isinstance(model, str):
        raise _invalid("forwardedProps.model must be a model's name.")
    answer = _answer(data.get("resume"))
    goal = "" if answer else _goal(messages)
    return RunInput(thread_id, run_id, goal, model, answer)


def _identifier(data: dict[str, Any], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_ID_CHARS:
        raise _invalid(f"{name} must be a non-empty string of at most {MAX_ID_CHARS} characters.")
    return value


def _goal(messages: list[dict[str, Any]]) -> str:
    last = next((m for m in reversed(messages) if m["role"] == "user"), None)
    if last is None:
        raise _invalid("messages must hold a user message: the last one is the run's goal.")
    text = _text(last.get("content"))
    if not text.strip():
        raise _invalid("The last user message has no text: it is the run's goal.")
    return text


def _text(content: Any) -> str:
    """A message's text: a string, or the text parts of a list of input parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p["text"] for p in content if isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str))
    return ""


def _answer(resume: Any) -> Answer | None:
    if resume is None or resume == []:
        return None
    if not isinstance(resume, list) or len(resume) != 1 or not isinstance(resume[0], dict):
        raise _invalid("resume must hold one entry: the answer to the interrupt the run ended with.")
    entry = resume[0]
    match = INTERRUPT_RE.match(entry.get("interruptId") or "") if isinstance(entry.get("interruptId"), str) else None
    if match is None:
        raise _invalid('resume[0].interruptId must be an interrupt this endpoint sent, such as "parley-run-12-step-5".')
    run, step = int(match.group(1)), int(match.group(2))
    if entry.get("status") == "cancelled":
        return Answer(run, step, "reject", "Abandoned by the client.", abandoned=True)
    if entry.get("status") != "resolved":
        raise _invalid('resume[0].status must be "resolved" or "cancelled".')
    payload = entry.get("payload")
    if not isinstance(payload, dict) or payload.get("decision") not in ("approve", "reject"):
        raise _invalid('resume[0].payload must be {"decision": "approve" or "reject", "note": optional text}.')
    note = payload.get("note", "")
    if not isinstance(note, str) or len(note) > 2000:
        raise _invalid("resume[0].payload.note must be text of at most 2,000 characters.")
    return Answer(run, step, payload["decision"], note, abandoned=False)


def _invalid(detail: str) -> ActionError:
    return ActionError("invalid_input", detail)


def interrupt_id(run: int, step: int) -> str:
    return f"parley-run-{run}-step-{step}"


# Output --------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Segment:
    """What one AG-UI run covers of a Parley run: from its start (`after_step` 0), or from the
    approval of step `after_step` on."""

    run: int
    after_step: int = 0

    def as_value(self) -> str:
        return f"{self.run}:{self.after_step}"

    @classmethod
    def of_value(cls, value: str) -> "Segment":
        run, _, step = value.partition(":")
        return cls(int(run), int(step or 0))


@dataclass
class Translator:
    thread_id: str
    run_id: str
    segment: Segment
    opened: bool = False
    ended: bool = False
    state: dict[str, Any] = field(default_factory=dict)
    steps: dict[int, str] = field(default_factory=dict)  # open steps: index -> the step's AG-UI name
    text: str | None = None  # the text message being written, if any
    asking: int = 0  # the last model step: the tool calls that follow are its message's

    def __post_init__(self) -> None:
        self.state = {
            "run": self.segment.run, "status": "queued", "stepsDone": 0, "tokens": 0, "costUsd": "0",
            "percent": 0, "current": "",
        }

    def opening(self) -> list[dict[str, Any]]:
        """RUN_STARTED and the progress so far; for a segment from the start, before any event."""
        self.opened = True
        started = {"type": "RUN_STARTED", "threadId": self.thread_id, "runId": self.run_id, "protocolVersion": PROTOCOL_VERSION}
        return [started, {"type": "STATE_SNAPSHOT", "snapshot": dict(self.state)}]

    def feed(self, event: dict[str, Any], expires: str | None = None) -> list[dict[str, Any]]:
        """The AG-UI events of one Parley run event (none before the segment or after its end).
        `expires`: an approval's deadline, from the database (the log does not carry it)."""
        if self.ended:
            return []
        kind = event["type"]
        if not self.opened:
            self._fold(event)
            if kind == "approval_requested" and event["step"] == self.segment.after_step:
                return self.opening()
            if kind == "run_finished":  # the approval was never reached in what is left of the log
                return [*self.opening(), *self._finished(event)]
            return []
        handler = getattr(self, f"_on_{kind}", None)
        out = handler(event, expires) if handler else []
        return [*out, *self._delta(event)] if kind not in ("approval_requested", "run_finished") else out

    # One method per Parley event type --------------------------------------------------------------

    def _on_step_started(self, event: dict[str, Any], expires: str | None) -> list[dict[str, Any]]:
        name = f"Step {event['step']}: {event['title']}"
        self.steps[event["step"]] = name
        return [{"type": "STEP_STARTED", "stepName": name}]

    def _on_step_delta(self, event: dict[str, Any], expires: str | None) -> list[dict[str, Any]]:
        if not event["text"]:
            return []
        out: list[dict[str, Any]] = []
        if self.text is None:
            self.text = self._text_id(event["step"])
            out.append({"type": "TEXT_MESSAGE_START", "messageId": self.text, "role": "assistant"})
        out.append({"type": "TEXT_MESSAGE_CONTENT", "messageId": self.text, "delta": event["text"]})
        return out

    def _on_tool_call(self, event: dict[str, Any], expires: str | None) -> list[dict[str, Any]]:
        call = self._call_id(event)
        parent = self._text_id(self.asking)
        return [
            {"type": "TOOL_CALL_START", "toolCallId": call, "toolCallName": event["tool"], "parentMessageId": parent},
            {"type": "TOOL_CALL_ARGS", "toolCallId": call, "delta": orjson.dumps(event["arguments"]).decode()},
            {"type": "TOOL_CALL_END", "toolCallId": call},
        ]

    def _on_tool_result(self, event: dict[str, Any], expires: str | None) -> list[dict[str, Any]]:
        content = orjson.dumps(event["result"]).decode() if event["ok"] else f"Error: {event['error']}"
        return [{
            "type": "TOOL_CALL_RESULT", "messageId": f"parley-run-{self.segment.run}-step-{event['step']}-result",
            "toolCallId": self._call_id(event), "content": content, "role": "tool",
        }]

    def _on_step_finished(self, event: dict[str, Any], expires: str | None) -> list[dict[str, Any]]:
        return [*self._end_text(), *self._end_step(event["step"])]

    def _on_approval_requested(self, event: dict[str, Any], expires: str | None) -> list[dict[str, Any]]:
        self._fold(event)
        self.ended = True
        interrupt: dict[str, Any] = {
            "id": interrupt_id(self.segment.run, event["step"]),
            "reason": "tool_approval",
            "message": f"The run asks to call {event['tool']}: {event['reason']}",
            "responseSchema": APPROVAL_SCHEMA,
            "metadata": {"tool": event["tool"], "arguments": event["arguments"], "run": self.segment.run, "step": event["step"]},
        }
        if expires:
            interrupt["expiresAt"] = expires
        return [
            *self._end_text(), *self._close_steps(), self._patch(["status"]),
            {"type": "RUN_FINISHED", "threadId": self.thread_id, "runId": self.run_id,
             "outcome": {"type": "interrupt", "interrupts": [interrupt]}},
        ]

    def _on_run_finished(self, event: dict[str, Any], expires: str | None) -> list[dict[str, Any]]:
        return self._finished(event)

    # Helpers ---------------------------------------------------------------------------------------

    def _finished(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        before = dict(self.state)
        self._fold(event)
        self.ended = True
        changed = [name for name in self.state if self.state[name] != before[name]]
        out = [*self._end_text(), *self._close_steps(), *([self._patch(changed)] if changed else [])]
        status = event["status"]
        if status in ("failed", "interrupted"):
            error = {"type": "RUN_ERROR", "message": event["error_text"] or "The run failed.", "code": event["error_code"] or status}
            return [*out, error]
        finished = {"type": "RUN_FINISHED", "threadId": self.thread_id, "runId": self.run_id}
        if status == "cancelled":
            finished["outcome"] = {"type": "cancelled"}
        else:
            finished["result"] = event["result"]
            finished["outcome"] = {"type": "success"}
        return [*out, finished]

    def _delta(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        before = dict(self.state)
        self._fold(event)
        changed = [name for name in self.state if self.state[name] != before[name]]
        return [self._patch(changed)] if changed else []

    def _patch(self, names: list[str]) -> dict[str, Any]:
        return {"type": "STATE_DELTA", "delta": [{"op": "replace", "path": f"/{name}", "value": self.state[name]} for name in names]}

    def _fold(self, event: dict[str, Any]) -> None:
        """The run's progress after one more event: status, steps done, tokens, cost, percent."""
        state, kind = self.state, event["type"]
        if kind == "step_started" and event["kind"] == "model":
            self.asking = event["step"]
        elif kind in ("run_started", "approval_decided"):
            state["status"] = "running"
        elif kind == "approval_requested":
            state["status"] = "awaiting_approval"
        elif kind == "progress":
            state["percent"], state["current"] = event["percent"], event["current"]
        elif kind == "step_finished":
            state["stepsDone"] += 1
            state["tokens"] += event["tokens"]
            state["costUsd"] = str(Decimal(state["costUsd"]) + Decimal(event["cost_usd"]))
        elif kind == "run_finished":
            state["status"], state["tokens"], state["costUsd"] = event["status"], event["tokens"], event["cost_usd"]
            state["current"] = ""
            if event["status"] == "succeeded":
                state["percent"] = 100

    def _text_id(self, step: int) -> str:
        return f"parley-run-{self.segment.run}-step-{step}-text"

    def _call_id(self, event: dict[str, Any]) -> str:
        # The model's own ids repeat from run to run; a thread holds many runs.
        return f"parley-run-{self.segment.run}-{event['call_id']}"

    def _end_text(self) -> list[dict[str, Any]]:
        if self.text is None:
            return []
        ended, self.text = self.text, None
        return [{"type": "TEXT_MESSAGE_END", "messageId": ended}]

    def _end_step(self, index: int) -> list[dict[str, Any]]:
        name = self.steps.pop(index, None)
        return [{"type": "STEP_FINISHED", "stepName": name}] if name else []

    def _close_steps(self) -> list[dict[str, Any]]:
        return [event for index in sorted(self.steps) for event in self._end_step(index)]


def sse(number: int, event: dict[str, Any]) -> bytes:
    """One AG-UI event as an SSE frame; its id is its number in the AG-UI run, from 1."""
    return b"id: %d\ndata: %s\n\n" % (number, orjson.dumps(event))
