"""The one event schema: every event any door sends, defined once (documented in docs/streaming.md).

Cursors are Redis stream ids of the form "<offset>-<seq>": <offset> is the length of the reply text
after the event, so a reader holding a cursor can also be served exactly from the stored text.
"""

import re
from typing import Any, Literal, NotRequired, TypedDict

from providers.base import HTTP_STATUS, PLAIN_WORDS, ErrorCode

# ASCII digits only: `\d` would also read full-width and other scripts' digits ("１２-0" as 12).
CURSOR_RE = re.compile(r"^([0-9]{1,12})(?:-([0-9]{1,6}))?$")


class DeltaEvent(TypedDict):
    type: Literal["delta"]
    message: int
    cursor: str
    text: str


class DoneEvent(TypedDict):
    type: Literal["done"]
    message: int
    cursor: str
    status: str
    usage: dict[str, int | bool | str | None]
    finish_reason: str | None
    model_version: str | None
    ttft_ms: int | None
    duration_ms: int | None
    model: str | None  # the model that answered: another than the one asked for after a failover
    notice: str | None
    routing: dict[str, Any] | None  # how the model was chosen and reached (Message.routing)
    # The tools a reply called instead of (or after) its text: {"id", "name", "arguments"} each.
    # Only a call that offered tools (a protocol door's, gateway/) gets any.
    tool_calls: NotRequired[list[dict[str, str]]]


class ErrorEvent(TypedDict):
    type: Literal["error"]
    message: int | None
    cursor: NotRequired[str]
    status: NotRequired[str]
    code: str
    text: str
    retry_after: float | None
    ref: NotRequired[Any]
    limit: NotRequired[dict[str, Any]]  # quota_exceeded: which limit, what is left, when it resets
    model: NotRequired[str | None]  # a reply's: the model that failed last
    notice: NotRequired[str | None]
    routing: NotRequired[dict[str, Any] | None]


class MessageEvent(TypedDict):
    """A send was stored and its reply started; other tabs get it with `origin`, the sender with `ref`."""

    type: Literal["message"]
    conversation: dict[str, Any]  # Conversation.as_dict()
    user_message: dict[str, Any]  # Message.as_dict()
    assistant_message: dict[str, Any]
    ref: NotRequired[Any]
    origin: NotRequired[str]


class ConversationEvent(TypedDict):
    """A conversation changed elsewhere (it got its automatic title)."""

    type: Literal["conversation"]
    conversation: dict[str, Any]


class RunNoticeEvent(TypedDict):
    """An agent run of the user's started, waits for an approval, or ended: every open tab is told,
    so that each can show its card (and its Approve button) and attach to its log."""

    type: Literal["run"]
    run: dict[str, Any]


class StoppingEvent(TypedDict):
    """A stop was taken: `stopping` while the reply's own process ends it, `stopped` when it was
    ended here because that process is gone. The reply's final event follows either way."""

    type: Literal["stopping"]
    message: int
    status: Literal["stopping", "stopped"]
    ref: NotRequired[Any]


# Agent runs ---------------------------------------------------------------------------------------
# A run's log has the same cursors as a reply's, counted in events instead of characters: the n-th
# event has cursor "<n>-0" and the last one, `run_finished`, "<n>-1". Written by Celery workers
# through streaming/writer.py, read through the same read API as replies.

RunStatus = Literal["queued", "running", "awaiting_approval", "succeeded", "failed", "cancelled", "interrupted"]
StepKind = Literal["model", "tool", "approval"]


class RunStartedEvent(TypedDict):
    type: Literal["run_started"]
    run: int
    cursor: str
    goal: str
    model: str


class StepStartedEvent(TypedDict):
    type: Literal["step_started"]
    run: int
    cursor: str
    step: int  # the step's position in the run, from 1
    kind: StepKind
    title: str  # what the step does, in plain words


class StepDeltaEvent(TypedDict):
    """Text of a model step as it is written."""

    type: Literal["step_delta"]
    run: int
    cursor: str
    step: int
    text: str


class ToolCallEvent(TypedDict):
    type: Literal["tool_call"]
    run: int
    cursor: str
    step: int
    call_id: str
    tool: str
    arguments: dict[str, Any]  # validated against the tool's schema before this is written


class ToolResultEvent(TypedDict):
    type: Literal["tool_result"]
    run: int
    cursor: str
    step: int
    call_id: str
    ok: bool
    result: Any  # JSON; None when the tool failed
    error: str | None


class ApprovalRequestedEvent(TypedDict):
    type: Literal["approval_requested"]
    run: int
    cursor: str
    step: int
    tool: str
    arguments: dict[str, Any]
    reason: str


class ApprovalDecidedEvent(TypedDict):
    type: Literal["approval_decided"]
    run: int
    cursor: str
    step: int
    decision: Literal["approve", "reject"]
    note: str


class StepFinishedEvent(TypedDict):
    type: Literal["step_finished"]
    run: int
    cursor: str
    step: int
    status: Literal["succeeded", "failed", "skipped"]
    tokens: int
    cost_usd: str  # a decimal, as text: JSON numbers would round it


class ProgressEvent(TypedDict):
    type: Literal["progress"]
    run: int
    cursor: str
    percent: int  # 0-100
    current: str  # the current step in plain words


class RunFinishedEvent(TypedDict):
    """The final event of a run, whatever its end."""

    type: Literal["run_finished"]
    run: int
    cursor: str
    status: Literal["succeeded", "failed", "cancelled", "interrupted"]
    result: str
    error_code: str | None
    error_text: str | None
    tokens: int
    cost_usd: str


RUN_EVENT_TYPES = (
    "run_started", "step_started", "step_delta", "tool_call", "tool_result",
    "approval_requested", "approval_decided", "step_finished", "progress", "run_finished",
)


def run_event(event_type: str, run_id: int, seq: int, **fields: Any) -> dict[str, Any]:
    """A run event at the `seq`-th place of its run's log; `run_finished` is the final one.
    Every field of the type must be given: a missing or unknown one is a programming error."""
    expected = set(_RUN_EVENT_FIELDS[event_type])
    if set(fields) != expected:
        raise TypeError(f"{event_type} takes {sorted(expected)}, got {sorted(fields)}")
    final = event_type == "run_finished"
    return {"type": event_type, "run": run_id, "cursor": cursor_for(seq, 1 if final else 0), **fields}


_RUN_EVENT_FIELDS: dict[str, tuple[str, ...]] = {
    cls.__annotations__["type"].__args__[0]: tuple(name for name in cls.__annotations__ if name not in {"type", "run", "cursor"})
    for cls in (
        RunStartedEvent, StepStartedEvent, StepDeltaEvent, ToolCallEvent, ToolResultEvent, ApprovalRequestedEvent,
        ApprovalDecidedEvent, StepFinishedEvent, ProgressEvent, RunFinishedEvent,
    )
}


def cursor_for(offset: int, seq: int = 0) -> str:
    return f"{offset}-{seq}"


def parse_cursor(raw: object) -> tuple[int, int] | None:
    """Parse a client cursor; "" / None / 0 mean the start. Returns None when malformed."""
    if raw is None or raw == "":
        return (0, 0)
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return (raw, 0) if raw >= 0 else None
    if not isinstance(raw, str):
        return None
    match = CURSOR_RE.match(raw.strip())
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2) or 0)


def delta(message_id: int, offset: int, text: str) -> DeltaEvent:
    return {"type": "delta", "message": message_id, "cursor": cursor_for(offset), "text": text}


def done(
    message_id: int,
    offset: int,
    status: str,
    prompt_tokens: int | None = None,
    completion_tokens: int | None = None,
    finish_reason: str | None = None,
    model_version: str | None = None,
    ttft_ms: int | None = None,
    duration_ms: int | None = None,
    estimated: bool = False,
    cost_usd: str | None = None,
    model: str | None = None,
    notice: str | None = None,
    routing: dict[str, Any] | None = None,
    tool_calls: list[dict[str, str]] | None = None,
) -> DoneEvent:
    """A reply's end. `usage` holds the tokens and cost as billed: estimated where the provider
    gave no counts (`estimated`), the cost in USD as exact decimal text."""
    event: DoneEvent = {
        "type": "done",
        "message": message_id,
        "cursor": cursor_for(offset, 1),
        "status": status,
        "usage": {
            "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "estimated": estimated, "cost_usd": cost_usd,
        },
        "finish_reason": finish_reason,
        "model_version": model_version,
        "ttft_ms": ttft_ms,
        "duration_ms": duration_ms,
        "model": model,
        "notice": notice,
        "routing": routing,
    }
    if tool_calls:
        event["tool_calls"] = tool_calls
    return event


def message_started(conversation: dict[str, Any], user_message: dict[str, Any], assistant_message: dict[str, Any]) -> MessageEvent:
    return {"type": "message", "conversation": conversation, "user_message": user_message, "assistant_message": assistant_message}


def conversation_changed(conversation: dict[str, Any]) -> ConversationEvent:
    return {"type": "conversation", "conversation": conversation}


def run_changed(run: dict[str, Any]) -> RunNoticeEvent:
    return {"type": "run", "run": run}


def stopping(message_id: int, ended_here: bool) -> StoppingEvent:
    return {"type": "stopping", "message": message_id, "status": "stopped" if ended_here else "stopping"}


def message_error(
    message_id: int, offset: int, code: ErrorCode | str, text: str, retry_after: float | None,
    model: str | None = None, notice: str | None = None, routing: dict[str, Any] | None = None,
) -> ErrorEvent:
    """The final event of a generation that failed; the partial text stays readable."""
    return {
        "type": "error",
        "message": message_id,
        "cursor": cursor_for(offset, 1),
        "status": "failed",
        "code": str(code),
        "text": text,
        "retry_after": retry_after,
        "model": model,
        "notice": notice,
        "routing": routing,
    }


# Request-level errors: not tied to a generation (bad frames, foreign ids, overload, ...).
REQUEST_ERRORS: dict[str, tuple[int, str]] = {
    "invalid_json": (400, "The request body is not valid JSON."),
    "invalid_frame": (400, "The frame is not understood."),
    "invalid_input": (400, "Some fields are missing or invalid."),
    "empty_message": (400, "The message is empty."),
    "message_too_long": (413, "The message is too long."),
    "file_too_large": (413, "The file is too large."),
    "unsupported_file_type": (415, "Only text, Markdown, CSV, PDF and image (PNG, JPEG, GIF, WebP) files can be attached."),
    "model_cannot_see_images": (422, "This model can't read images; pick a model that can, or remove the image."),
    "unreadable_file": (422, "The file could not be read."),
    "too_many_uploads": (409, "This conversation has as many files as it may have. Remove one first."),
    "unknown_model": (400, "That model is not offered."),
    "not_found": (404, "Not found."),
    "not_authenticated": (401, "Sign in first."),
    "forbidden": (403, "Not allowed."),
    "insufficient_scope": (403, "This API token's scopes do not allow this request."),
    "method_not_allowed": (405, "Method not allowed."),
    "unsupported_media_type": (415, "Send the body as JSON (Content-Type: application/json)."),
    "uri_too_long": (414, "The web address is too long: at most 16 KiB."),
    "headers_too_large": (431, "A request header is too long: at most 16 KiB."),
    "server_error": (500, "Something went wrong on the server. Try again."),
    "busy": (503, "Parley is busy right now. Try again in a few seconds."),
    "conversation_busy": (409, "A reply is still being written in this conversation. Wait for it or press Stop."),
    "already_finished": (409, "That reply has already finished."),
    "quota_exceeded": (429, "You have reached a limit of your plan."),
    "model_not_allowed": (403, "Your plan does not include that model."),
    "suspended": (403, "Your account is suspended: new replies are paused. Ask an administrator."),
    "run_finished": (409, "That agent run has already finished."),
    "not_awaiting_approval": (409, "That step is not waiting for a decision."),
    "too_many_shares": (429, "You have made as many share links as you may for now. Revoke one, or try again later."),
    "too_many_runs": (429, "Too many of your agent runs are under way. Wait for one to finish or cancel one."),
}


def request_error(
    code: str, detail: str = "", retry_after: float | None = None, ref: Any = None, limit: dict[str, Any] | None = None
) -> ErrorEvent:
    if code in REQUEST_ERRORS:
        text = REQUEST_ERRORS[code][1]
    else:
        text = PLAIN_WORDS[ErrorCode(code)]
    event: ErrorEvent = {"type": "error", "message": None, "code": code, "text": detail or text, "retry_after": retry_after}
    if ref is not None:
        event["ref"] = ref
    if limit is not None:
        event["limit"] = limit
    return event


def http_status(code: str) -> int:
    if code in REQUEST_ERRORS:
        return REQUEST_ERRORS[code][0]
    return HTTP_STATUS[ErrorCode(code)]
