"""Anthropic's Messages wire format: a request read into a `CallRequest`, and a reply's final
event written as a message, or as the stream events of one.

Parley's neutral form (providers.base.ChatRequest) has no blocks: an assistant's `tool_use`
blocks become its `tool_calls` (arguments as JSON text), each `tool_result` block a `tool` turn,
and a user's text blocks one text. `top_k` is accepted and not passed on (Parley's models take
no such option); `thinking` and server tools are refused, since no Parley model runs them.
"""

from dataclasses import dataclass
from typing import Any

import orjson

from chat.responses import read_json_bytes
from gateway import inputs
from gateway.calls import CallRequest
from gateway.inputs import invalid
from providers.base import Image

# Parley's finish reasons as Anthropic's stop reasons; a reply that called tools stopped for them.
STOP_REASONS = {"length": "max_tokens", "stop_sequence": "stop_sequence", "content_filter": "refusal"}


@dataclass(frozen=True, slots=True)
class Parsed:
    call: CallRequest
    stream: bool


def read_request(body: bytes, content_type: str, counting: bool = False) -> Parsed:
    """A Messages request; `counting`, one to `messages/count_tokens`, which sends no max_tokens."""
    data = read_json_bytes(body, content_type)
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("model", "Field required: the name of one of Parley's models.")
    most = inputs.optional_int(data, "max_tokens")
    if most is None and not counting:
        raise invalid("max_tokens", "Field required: the most tokens the reply may have.")
    if data.get("thinking") not in (None, {"type": "disabled"}):
        raise invalid("thinking", "extended thinking is not offered by this gateway.")
    options: dict[str, Any] = {}
    temperature = inputs.optional_number(data, "temperature", 0, 1)
    if temperature is not None:
        options["temperature"] = temperature
    top_p = inputs.optional_number(data, "top_p", 0, 1)
    if top_p is not None:
        options["top_p"] = top_p
    inputs.optional_int(data, "top_k", minimum=0)  # checked, then not passed on (see the module's words)
    stop = _stop_sequences(data.get("stop_sequences"))
    if stop:
        options["stop"] = stop
    tools = _tools(data.get("tools"))
    choice = _tool_choice(data.get("tool_choice"), tools)
    if choice is not None:
        options["tool_choice"] = choice
    metadata = data.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise invalid("metadata", "must be an object.")
    call = CallRequest(
        model=model, messages=_messages(data.get("messages")), system=_system(data.get("system")), max_output=most,
        tools=tools, options=options, end_user=inputs.optional_text(metadata, "user_id"),
    )
    return Parsed(call, inputs.optional_bool(data, "stream"))


def _stop_sequences(value: object) -> tuple[str, ...]:
    if value is not None and not isinstance(value, list):
        raise invalid("stop_sequences", "must be a list of texts.")
    return inputs.stop_sequences(value or None, "stop_sequences")


def _system(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "\n\n".join(_text_block(block, f"system[{index}]") for index, block in enumerate(value))
    raise invalid("system", "must be text or a list of text blocks.")


def _text_block(block: object, field: str) -> str:
    if not isinstance(block, dict) or block.get("type") != "text" or not isinstance(block.get("text"), str):
        raise invalid(field, 'must be a text block ({"type": "text", "text": ...}).')
    return block["text"]


def _messages(value: object) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise invalid("messages", "must be a non-empty list.")
    messages: list[dict[str, Any]] = []
    for index, item in enumerate(value):
        field = f"messages[{index}]"
        if not isinstance(item, dict) or item.get("role") not in ("user", "assistant"):
            raise invalid(f"{field}.role", "must be user or assistant.")
        content = item.get("content")
        if isinstance(content, str):
            messages.append({"role": item["role"], "content": content})
        elif not isinstance(content, list):
            raise invalid(f"{field}.content", "must be text or a list of content blocks.")
        elif item["role"] == "user":
            messages += _user_turns(content, f"{field}.content")
        else:
            messages.append(_assistant_turn(content, f"{field}.content"))
    return messages


def _user_turns(blocks: list[Any], field: str) -> list[dict[str, Any]]:
    """A user turn's blocks: its tool results first, each a `tool` turn, then its text and images."""
    results: list[dict[str, Any]] = []
    texts: list[str] = []
    images: list[Image] = []
    for index, block in enumerate(blocks):
        where = f"{field}[{index}]"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(_text_block(block, where))
        elif kind == "image":
            images.append(_image(block.get("source"), f"{where}.source"))
        elif kind == "tool_result":
            results.append(_tool_result(block, where))
        else:
            raise invalid(where, "must be a text, image or tool_result block.")
    turns = list(results)
    if texts or images or not results:
        turn: dict[str, Any] = {"role": "user", "content": "\n".join(texts)}
        if images:
            turn["attachments"] = tuple(images)
        turns.append(turn)
    return turns


def _image(source: object, field: str) -> Image:
    if not isinstance(source, dict) or source.get("type") != "base64":
        raise invalid(field, 'must be {"type": "base64", "media_type", "data"}: Parley does not fetch images by URL.')
    return inputs.image(source.get("media_type"), source.get("data"), f"{field}.data")


def _tool_result(block: dict[str, Any], field: str) -> dict[str, Any]:
    call_id = block.get("tool_use_id")
    if not isinstance(call_id, str) or not call_id:
        raise invalid(f"{field}.tool_use_id", "is required.")
    content = block.get("content")
    if content is None:
        text = ""
    elif isinstance(content, str):
        text = content
    elif isinstance(content, list):
        text = "\n".join(_text_block(part, f"{field}.content[{index}]") for index, part in enumerate(content))
    else:
        raise invalid(f"{field}.content", "must be text or a list of text blocks.")
    if block.get("is_error"):
        # The neutral form has no error flag: the model reads that the tool failed in the result itself.
        text = f"Error: {text}"
    return {"role": "tool", "tool_call_id": call_id, "content": text}


def _assistant_turn(blocks: list[Any], field: str) -> dict[str, Any]:
    texts: list[str] = []
    calls: list[dict[str, str]] = []
    for index, block in enumerate(blocks):
        where = f"{field}[{index}]"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(_text_block(block, where))
        elif kind == "tool_use":
            if not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str) or not isinstance(block.get("input"), dict):
                raise invalid(where, "must be {type: tool_use, id, name, input: {...}}.")
            calls.append({"id": block["id"], "name": block["name"], "arguments": orjson.dumps(block["input"]).decode()})
        elif kind in ("thinking", "redacted_thinking"):
            continue  # an earlier reply's thinking, sent back as the API asks: no Parley model reads it
        else:
            raise invalid(where, "must be a text or tool_use block.")
    turn: dict[str, Any] = {"role": "assistant", "content": "".join(texts)}
    if calls:
        turn["tool_calls"] = calls
    return turn


def _tools(value: object) -> tuple[dict[str, Any], ...]:
    tools = []
    for index, item in enumerate(inputs.tool_list(value, "tools")):
        if not isinstance(item, dict) or item.get("type", "custom") != "custom":
            raise invalid(f"tools[{index}]", "must be a client tool {name, description, input_schema}; server tools are not offered.")
        tools.append(inputs.tool(item.get("name"), item.get("description"), item.get("input_schema"), f"tools[{index}]"))
    return tuple(tools)


def _tool_choice(value: object, tools: tuple[dict[str, Any], ...]) -> str | dict[str, str] | None:
    """Anthropic's {type: auto|any|tool|none} as Parley's "auto", "required", {"name"} or "none"."""
    if value is None:
        return None
    kind = value.get("type") if isinstance(value, dict) else None
    if kind in ("auto", "none"):
        return str(kind)
    if kind == "any":
        return "required"
    name = value.get("name") if isinstance(value, dict) and kind == "tool" else None
    if isinstance(name, str):
        if name not in {tool["name"] for tool in tools}:
            raise invalid("tool_choice.name", f"names {name!r}, which is not among tools.")
        return {"name": name}
    raise invalid("tool_choice", "must be {type: auto}, {type: any}, {type: tool, name} or {type: none}.")


@dataclass(frozen=True, slots=True)
class Reply:
    """One reply written as an Anthropic message: its id, the model asked for and the call's stop sequences."""

    id: str
    model: str
    stop: tuple[str, ...] = ()

    def opening(self) -> dict[str, Any]:
        """`message_start`: the message still empty. Its input tokens are known only at the end,
        and come in `message_delta` (the SDKs take them from there)."""
        return {"type": "message_start", "message": {
            "id": self.id, "type": "message", "role": "assistant", "model": self.model, "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 0, "output_tokens": 0},
        }}

    @staticmethod
    def text_start(index: int) -> dict[str, Any]:
        return {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}

    @staticmethod
    def text_delta(index: int, text: str) -> dict[str, Any]:
        return {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}}

    @staticmethod
    def block_stop(index: int) -> dict[str, Any]:
        return {"type": "content_block_stop", "index": index}

    def tool_blocks(self, first_index: int, final: dict[str, Any]) -> list[dict[str, Any]]:
        """Each tool call as its block's start, its whole input in one `input_json_delta`, its stop."""
        events: list[dict[str, Any]] = []
        for index, call in enumerate(final.get("tool_calls") or [], first_index):
            events += [
                {"type": "content_block_start", "index": index,
                 "content_block": {"type": "tool_use", "id": call["id"], "name": call["name"], "input": {}}},
                {"type": "content_block_delta", "index": index,
                 "delta": {"type": "input_json_delta", "partial_json": orjson.dumps(tool_input(call["arguments"])).decode()}},
                self.block_stop(index),
            ]
        return events

    def ending(self, final: dict[str, Any], text_open: bool) -> list[dict[str, Any]]:
        """The events after the last text: its block's stop (a message holds at least one block,
        so a reply with neither text nor tool calls has an empty one), the tool calls' blocks,
        `message_delta` and `message_stop`."""
        events: list[dict[str, Any]] = []
        if not text_open and not final.get("tool_calls"):
            events.append(self.text_start(0))
            text_open = True
        if text_open:
            events.append(self.block_stop(0))
        return events + self.tool_blocks(1 if text_open else 0, final) + self.closing(final)

    def closing(self, final: dict[str, Any]) -> list[dict[str, Any]]:
        """`message_delta` (the stop reason and the usage as billed), then `message_stop`."""
        reason, sequence = self.stop_reason(final)
        return [
            {"type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": sequence}, "usage": usage(final)},
            {"type": "message_stop"},
        ]

    def whole(self, text: str, final: dict[str, Any]) -> dict[str, Any]:
        content: list[dict[str, Any]] = []
        calls = final.get("tool_calls") or []
        if text or not calls:
            content.append({"type": "text", "text": text})
        content += [
            {"type": "tool_use", "id": call["id"], "name": call["name"], "input": tool_input(call["arguments"])} for call in calls
        ]
        reason, sequence = self.stop_reason(final)
        return {
            "id": self.id, "type": "message", "role": "assistant", "model": final.get("model") or self.model,
            "content": content, "stop_reason": reason, "stop_sequence": sequence, "usage": usage(final),
        }

    def stop_reason(self, final: dict[str, Any]) -> tuple[str, str | None]:
        if final.get("tool_calls"):
            return "tool_use", None
        reason = STOP_REASONS.get(final.get("finish_reason") or "", "end_turn")
        # Which sequence ended the reply is known only when the call gave just one.
        sequence = self.stop[0] if reason == "stop_sequence" and len(self.stop) == 1 else None
        return reason, sequence

    @staticmethod
    def sse(event: dict[str, Any]) -> bytes:
        return b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


PING = Reply.sse({"type": "ping"})


def error_event(kind: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message}}


def tool_input(arguments: str) -> dict[str, Any]:
    """A tool call's arguments as the object Anthropic's clients expect; a model's arguments that
    are not a JSON object (rare, and answered as a tool error in Parley's own runs) come as {}."""
    try:
        parsed = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def usage(final: dict[str, Any]) -> dict[str, int]:
    counted = final.get("usage") or {}
    return {"input_tokens": counted.get("prompt_tokens") or 0, "output_tokens": counted.get("completion_tokens") or 0}
