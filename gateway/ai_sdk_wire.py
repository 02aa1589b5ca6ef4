"""The AI SDK's wire formats: the body `useChat`'s default transport posts, and the UI message
stream it reads back.

The transport (`DefaultChatTransport` of the npm package `ai`) posts
`{id, messages: UIMessage[], trigger: "submit-message" | "regenerate-message", messageId?, ...body}`
and parses the answer as server-sent events, `data: <chunk JSON>` each, checked against the
package's `uiMessageChunkSchema`, ending with `data: [DONE]`. A reply becomes
`start` (its Parley id as `messageId`), `start-step`, `text-start`, `text-delta`…, `text-end`,
`finish-step`, then `finish`, or `abort` (stopped) or `error` (failed or interrupted).
"""

from dataclasses import dataclass, field
from typing import Any

import orjson

from chat.actions import ActionError

HEADERS = {
    "Cache-Control": "no-cache, no-transform",
    "X-Accel-Buffering": "no",
    "x-vercel-ai-ui-message-stream": "v1",
}
DONE = b"data: [DONE]\n\n"
KEEP_ALIVE = b": keep-alive\n\n"  # a comment: the SDK's event-stream parser skips it
CHAT_ID_MAX = 200  # Conversation.external_id
TRIGGERS = ("submit-message", "regenerate-message")
# Parley's finish reasons, as the SDK's `finish` chunk names them (its enum).
FINISH_REASONS = {"stop": "stop", "length": "length", "content_filter": "content-filter", "tool_calls": "tool-calls"}


@dataclass(frozen=True, slots=True)
class ChatPost:
    """What a `useChat` post asks: the chat, what to do, the last user message's text (a send's
    question; a regenerate asks the stored one again) and the model, if the page named one."""

    chat_id: str
    trigger: str
    text: str
    model: str | None = None
    message_id: str | None = None  # a regenerate's reply, when the page named one


def read_post(data: dict[str, Any]) -> ChatPost:
    """The body checked; ActionError("invalid_input") saying what is wrong otherwise."""
    chat_id = data.get("id")
    if not isinstance(chat_id, str) or not chat_id.strip():
        raise ActionError("invalid_input", "id must be the chat's id, a non-empty string.")
    if len(chat_id) > CHAT_ID_MAX:
        raise ActionError("invalid_input", f"id must be at most {CHAT_ID_MAX} characters.")
    trigger = data.get("trigger", "submit-message")
    if trigger not in TRIGGERS:
        raise ActionError("invalid_input", "trigger must be 'submit-message' or 'regenerate-message'.")
    model = data.get("model")
    if model is not None and (not isinstance(model, str) or not model):
        raise ActionError("invalid_input", "model must be a model name.")
    message_id = data.get("messageId")
    if message_id is not None and not isinstance(message_id, str):
        raise ActionError("invalid_input", "messageId must be a string.")
    messages = data.get("messages")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise ActionError("invalid_input", "messages must be a list of UI messages.")
    last_user = next((m for m in reversed(messages) if m.get("role") == "user"), None)
    if last_user is None:
        raise ActionError("invalid_input", "messages must hold a user message.")
    if trigger == "submit-message" and messages[-1] is not last_user:
        raise ActionError("invalid_input", "The last message must be the user's.")
    return ChatPost(chat_id, trigger, user_text(last_user), model, message_id)


def user_text(message: dict[str, Any]) -> str:
    """A user message's text parts, joined. Files are refused: this door takes text only."""
    parts = message.get("parts")
    if not isinstance(parts, list) or not parts:
        raise ActionError("invalid_input", "A user message must have parts.")
    texts = []
    for part in parts:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "file":
            raise ActionError("invalid_input", "File parts are not supported here: send the message as text parts.")
        if kind != "text" or not isinstance(part.get("text"), str):
            raise ActionError("invalid_input", f"Only text parts are supported in a user message, not {kind!r}.")
        texts.append(part["text"])
    return "".join(texts)


def sse(chunk: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


@dataclass(slots=True)
class Reply:
    """One reply as UI message chunks; remembers whether its text part is open."""

    message_id: int
    conversation_id: int
    text_open: bool = field(default=False)

    @property
    def part_id(self) -> str:
        return f"text-{self.message_id}"

    def opening(self) -> list[dict[str, Any]]:
        metadata = {"conversation": self.conversation_id, "message": self.message_id}
        return [{"type": "start", "messageId": str(self.message_id), "messageMetadata": metadata}, {"type": "start-step"}]

    def text(self, text: str) -> list[dict[str, Any]]:
        chunks: list[dict[str, Any]] = []
        if not self.text_open:
            self.text_open = True
            chunks.append({"type": "text-start", "id": self.part_id})
        chunks.append({"type": "text-delta", "id": self.part_id, "delta": text})
        return chunks

    def closing(self, final: dict[str, Any]) -> list[dict[str, Any]]:
        """The chunks after the text, for the reply's final event (`done` or `error`)."""
        chunks: list[dict[str, Any]] = [{"type": "text-end", "id": self.part_id}] if self.text_open else []
        chunks.append({"type": "finish-step"})
        if final["type"] == "error":
            return [*chunks, {"type": "error", "errorText": final["text"]}, {"type": "finish", "finishReason": "error"}]
        if final["status"] == "stopped":
            return [*chunks, {"type": "abort", "reason": "The reply was stopped."}]
        if final["status"] == "interrupted":
            text = "The reply was interrupted before it was finished; its text so far is kept."
            return [*chunks, {"type": "error", "errorText": text}, {"type": "finish", "finishReason": "error"}]
        metadata = {"model": final.get("model"), "usage": final.get("usage")}
        reason = FINISH_REASONS.get(final.get("finish_reason") or "stop", "other")
        return [*chunks, {"type": "finish", "finishReason": reason, "messageMetadata": metadata}]
