"""OpenAI's Chat Completions wire format: a request read into a `CallRequest`, and a reply's
final event written as a completion, or as chunks of one."""

import math
from dataclasses import dataclass
from typing import Any

import orjson

from chat.models import ChatModel
from chat.responses import read_json_bytes
from gateway import inputs
from gateway.calls import CallRequest
from gateway.inputs import invalid

ROLES = {"system", "developer", "user", "assistant", "tool"}


@dataclass(frozen=True, slots=True)
class Parsed:
    call: CallRequest
    stream: bool
    include_usage: bool


def read_request(body: bytes, content_type: str) -> Parsed:
    data = read_json_bytes(body, content_type)
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("model", "is required: the name of one of GET /v1/models.")
    n = inputs.optional_int(data, "n")
    if n not in (None, 1):
        raise invalid("n", "only 1 is supported.")
    system, messages = _messages(data.get("messages"))
    most = inputs.optional_int(data, "max_completion_tokens")
    most = most if most is not None else inputs.optional_int(data, "max_tokens")
    options: dict[str, Any] = {}
    temperature = inputs.optional_number(data, "temperature", 0, 2)
    if temperature is not None:
        options["temperature"] = temperature
    top_p = inputs.optional_number(data, "top_p", 0, 1)
    if top_p is not None:
        options["top_p"] = top_p
    stop = inputs.stop_sequences(data.get("stop"), "stop")
    if stop:
        options["stop"] = stop
    tools = _tools(data.get("tools"))
    choice = _tool_choice(data.get("tool_choice"), tools)
    if choice is not None:
        options["tool_choice"] = choice
    stream = inputs.optional_bool(data, "stream")
    stream_options = data.get("stream_options") or {}
    if not isinstance(stream_options, dict):
        raise invalid("stream_options", "must be an object.")
    call = CallRequest(
        model=model, messages=messages, system=system, max_output=most, tools=tools, options=options,
        end_user=inputs.optional_text(data, "user"),
    )
    return Parsed(call, stream, inputs.optional_bool(stream_options, "include_usage"))


def _messages(value: object) -> tuple[str, list[dict[str, Any]]]:
    if not isinstance(value, list) or not value:
        raise invalid("messages", "must be a non-empty list.")
    system: list[str] = []
    messages: list[dict[str, Any]] = []
    for index, item in enumerate(value):
        field = f"messages[{index}]"
        if not isinstance(item, dict) or item.get("role") not in ROLES:
            raise invalid(f"{field}.role", "must be system, developer, user, assistant or tool.")
        role = item["role"]
        if role in ("system", "developer"):
            system.append(_text(item.get("content"), f"{field}.content"))
        elif role == "user":
            text, images = _user_content(item.get("content"), f"{field}.content")
            messages.append({"role": "user", "content": text, **({"attachments": tuple(images)} if images else {})})
        elif role == "assistant":
            content = item.get("content")
            message: dict[str, Any] = {"role": "assistant", "content": "" if content is None else _text(content, f"{field}.content")}
            calls = _tool_calls(item.get("tool_calls"), f"{field}.tool_calls")
            if calls:
                message["tool_calls"] = calls
            messages.append(message)
        else:
            call_id = item.get("tool_call_id")
            if not isinstance(call_id, str) or not call_id:
                raise invalid(f"{field}.tool_call_id", "is required for a tool message.")
            messages.append({"role": "tool", "tool_call_id": call_id, "content": _text(item.get("content"), f"{field}.content")})
    if not messages:
        raise invalid("messages", "must hold at least one user message.")
    return "\n\n".join(part for part in system if part), messages


def _text(content: object, field: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for index, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise invalid(f"{field}[{index}]", "must be a text part ({\"type\": \"text\", \"text\": ...}).")
            texts.append(part["text"])
        return "\n".join(texts)
    raise invalid(field, "must be text or a list of text parts.")


def _user_content(content: object, field: str) -> tuple[str, list[Any]]:
    if isinstance(content, str):
        return content, []
    if not isinstance(content, list):
        raise invalid(field, "must be text or a list of parts.")
    texts, images = [], []
    for index, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "image_url" and isinstance(part.get("image_url"), dict):
            images.append(inputs.data_url_image(part["image_url"].get("url"), f"{field}[{index}].image_url.url"))
        else:
            raise invalid(f"{field}[{index}]", "must be a text or image_url part.")
    return "\n".join(texts), images


def _tool_calls(value: object, field: str) -> list[dict[str, str]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise invalid(field, "must be a list.")
    calls = []
    for index, call in enumerate(value):
        function = call.get("function") if isinstance(call, dict) else None
        if (
            not isinstance(function, dict) or not isinstance(call.get("id"), str)
            or not isinstance(function.get("name"), str) or not isinstance(function.get("arguments", ""), str)
        ):
            raise invalid(f"{field}[{index}]", "must be {id, type: function, function: {name, arguments}}.")
        calls.append({"id": call["id"], "name": function["name"], "arguments": function.get("arguments") or "{}"})
    return calls


def _tools(value: object) -> tuple[dict[str, Any], ...]:
    tools = []
    for index, item in enumerate(inputs.tool_list(value, "tools")):
        function = item.get("function") if isinstance(item, dict) and item.get("type") == "function" else None
        if not isinstance(function, dict):
            raise invalid(f"tools[{index}]", "must be {type: function, function: {name, description, parameters}}.")
        tools.append(inputs.tool(function.get("name"), function.get("description"), function.get("parameters"), f"tools[{index}].function"))
    return tuple(tools)


def _tool_choice(value: object, tools: tuple[dict[str, Any], ...]) -> str | dict[str, str] | None:
    if value is None:
        return None
    if value == "required" and not tools:
        raise invalid("tool_choice", '"required" needs tools to choose from.')
    if value in ("none", "auto", "required"):
        return str(value) if tools else None  # "auto" or "none" without tools asks nothing
    function = value.get("function") if isinstance(value, dict) and value.get("type") == "function" else None
    if isinstance(function, dict) and isinstance(function.get("name"), str):
        if function["name"] not in {tool["name"] for tool in tools}:
            raise invalid("tool_choice", f"names {function['name']!r}, which is not among tools.")
        return {"name": function["name"]}
    raise invalid("tool_choice", 'must be "none", "auto", "required" or {type: function, function: {name}}.')


@dataclass(frozen=True, slots=True)
class Completion:
    """One reply written as a chat completion: its id, creation time and model."""

    id: str
    created: int
    model: str

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None, model: str | None = None) -> dict[str, Any]:
        return {
            "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": model or self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }

    def opening(self) -> dict[str, Any]:
        return self._chunk({"role": "assistant", "content": ""})

    def text_chunk(self, text: str) -> dict[str, Any]:
        return self._chunk({"content": text})

    def closing(self, final: dict[str, Any], include_usage: bool) -> list[dict[str, Any]]:
        """The last chunks: tool calls, the finish reason, the usage when asked; a reply that
        failed after some text ends with an error event, which the SDKs raise."""
        if final["type"] == "error":
            return [{"error": {"message": final["text"], "type": "server_error", "param": None, "code": final["code"]}}]
        chunks = []
        calls = final.get("tool_calls") or []
        if calls:
            chunks.append(self._chunk({"tool_calls": [
                {"index": i, "id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
                for i, c in enumerate(calls)
            ]}))
        chunks.append(self._chunk({}, finish_reason(final), final.get("model")))
        if include_usage:
            chunks.append({
                "id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": final.get("model") or self.model, "choices": [], "usage": usage(final),
            })
        return chunks

    def whole(self, text: str, final: dict[str, Any]) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": text or None, "refusal": None}
        calls = final.get("tool_calls") or []
        if calls:
            message["tool_calls"] = [
                {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}} for c in calls
            ]
        elif message["content"] is None:
            message["content"] = ""
        return {
            "id": self.id, "object": "chat.completion", "created": self.created, "model": final.get("model") or self.model,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason(final)}],
            "usage": usage(final),
        }

    @staticmethod
    def sse(chunk: dict[str, Any]) -> bytes:
        return b"data: " + orjson.dumps(chunk) + b"\n\n"


def finish_reason(final: dict[str, Any]) -> str:
    if final.get("tool_calls"):
        return "tool_calls"
    reason = final.get("finish_reason") or "stop"
    return reason if reason in ("stop", "length", "content_filter") else "stop"


def usage(final: dict[str, Any]) -> dict[str, int]:
    counted = final.get("usage") or {}
    prompt, completion = counted.get("prompt_tokens") or 0, counted.get("completion_tokens") or 0
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def refusal_headers(status: int, retry_after: float | None, limit: dict[str, Any] | None) -> dict[str, str]:
    """`retry-after` (and `retry-after-ms`) as the SDKs read them, and `x-ratelimit-*` for the
    limit that refused; `x-should-retry: false` when waiting a little would not help."""
    headers: dict[str, str] = {}
    if retry_after:
        headers["retry-after"] = str(max(1, math.ceil(retry_after)))
        headers["retry-after-ms"] = str(int(retry_after * 1000))
    if limit is not None:
        unit = "tokens" if limit["name"].startswith("tokens") else "requests"
        headers[f"x-ratelimit-limit-{unit}"] = str(int(limit["allowed"]))
        headers[f"x-ratelimit-remaining-{unit}"] = str(max(0, int(limit["remaining"])))
        if limit.get("resets_in") is not None:
            headers[f"x-ratelimit-reset-{unit}"] = f"{int(limit['resets_in'])}s"
        if limit["name"] not in ("requests_per_minute", "concurrent_replies"):
            headers["x-should-retry"] = "false"
    elif status == 429 and not retry_after:
        headers["x-should-retry"] = "false"
    return headers


def model_entry(model: ChatModel) -> dict[str, Any]:
    return {"id": model.name, "object": "model", "created": int(model.created.timestamp()) if getattr(model, "created", None) else 0,
            "owned_by": model.provider}
