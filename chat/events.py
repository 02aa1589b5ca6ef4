"""The event schema shared by the WebSocket and SSE transports (documented in docs/streaming.md).

Cursors are Redis stream ids of the form "<offset>-<seq>": <offset> is the length of the reply text
after the event, so a reader holding a cursor can also be served exactly from the stored text.
"""

import re
from typing import Any, Literal, NotRequired, TypedDict

from chat.providers.base import HTTP_STATUS, PLAIN_WORDS, ErrorCode

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
    usage: dict[str, int | None]
    finish_reason: str | None
    model_version: str | None
    ttft_ms: int | None
    duration_ms: int | None


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


class StoppingEvent(TypedDict):
    """A stop was taken: `stopping` while the reply's own process ends it, `stopped` when it was
    ended here because that process is gone. The reply's final event follows either way."""

    type: Literal["stopping"]
    message: int
    status: Literal["stopping", "stopped"]
    ref: NotRequired[Any]


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
) -> DoneEvent:
    return {
        "type": "done",
        "message": message_id,
        "cursor": cursor_for(offset, 1),
        "status": status,
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens},
        "finish_reason": finish_reason,
        "model_version": model_version,
        "ttft_ms": ttft_ms,
        "duration_ms": duration_ms,
    }


def message_started(conversation: dict[str, Any], user_message: dict[str, Any], assistant_message: dict[str, Any]) -> MessageEvent:
    return {"type": "message", "conversation": conversation, "user_message": user_message, "assistant_message": assistant_message}


def conversation_changed(conversation: dict[str, Any]) -> ConversationEvent:
    return {"type": "conversation", "conversation": conversation}


def stopping(message_id: int, ended_here: bool) -> StoppingEvent:
    return {"type": "stopping", "message": message_id, "status": "stopped" if ended_here else "stopping"}


def message_error(message_id: int, offset: int, code: ErrorCode | str, text: str, retry_after: float | None) -> ErrorEvent:
    """The final event of a generation that failed; the partial text stays readable."""
    return {
        "type": "error",
        "message": message_id,
        "cursor": cursor_for(offset, 1),
        "status": "failed",
        "code": str(code),
        "text": text,
        "retry_after": retry_after,
    }


# Request-level errors: not tied to a generation (bad frames, foreign ids, overload, ...).
REQUEST_ERRORS: dict[str, tuple[int, str]] = {
    "invalid_json": (400, "The request body is not valid JSON."),
    "invalid_frame": (400, "The frame is not understood."),
    "invalid_input": (400, "Some fields are missing or invalid."),
    "empty_message": (400, "The message is empty."),
    "message_too_long": (413, "The message is too long."),
    "unknown_model": (400, "That model is not offered."),
    "not_found": (404, "Not found."),
    "not_authenticated": (401, "Sign in first."),
    "forbidden": (403, "Not allowed."),
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
