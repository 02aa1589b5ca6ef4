"""Anthropic Messages streaming.

As with OpenAI, the SDK sends the request (auth headers, API version, retries until the response
headers arrive) in raw streaming-response mode, and the SSE body is decoded here (see `sse_wire`).
"""

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import anthropic
import orjson
from django.conf import settings

from providers.base import (
    Capabilities,
    ChatRequest,
    ErrorCode,
    Finish,
    Provider,
    StreamError,
    StreamEvent,
    TextDelta,
    Timeouts,
    ToolCall,
    Usage,
    images_of,
    user_text,
)
from providers.sse_wire import ClientCache, StreamReader, error_from_payload, error_from_status, malformed, relay, tls_context

DEFAULT_BASE_URL = "https://api.anthropic.com"
# Without a key the API answers 401, which is the honest outcome; the SDK would otherwise go
# looking for credentials in profiles on disk.
PLACEHOLDER_KEY = "no-key-configured"

STOP_REASONS = {
    "end_turn": "stop",
    # Kept apart from "stop": Parley's Anthropic-compatible door reports it as Anthropic does.
    "stop_sequence": "stop_sequence",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "refusal": "content_filter",
    "tool_use": "tool_calls",
}


class AnthropicProvider(Provider):
    name = "anthropic"
    label = "Anthropic"
    capabilities = Capabilities()
    buffers_unread_events = True

    def __init__(
        self,
        timeouts: Timeouts | None = None,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        max_retries: int | None = None,
    ) -> None:
        super().__init__(timeouts)
        self.api_key = settings.ANTHROPIC_API_KEY if api_key is None else api_key
        self.base_url = (settings.ANTHROPIC_BASE_URL if base_url is None else base_url) or DEFAULT_BASE_URL
        self.max_retries = settings.PROVIDER_MAX_RETRIES if max_retries is None else max_retries
        self._clients: ClientCache[anthropic.AsyncAnthropic] = ClientCache(self._new_client)

    def _new_client(self, base_url: str, api_key: str) -> anthropic.AsyncAnthropic:
        return anthropic.AsyncAnthropic(
            api_key=api_key or PLACEHOLDER_KEY,
            base_url=base_url,
            max_retries=self.max_retries,
            # No socket read timeout: Provider.stream's first-token and idle limits govern silence,
            # and a read timeout would re-arm a timer on every chunk of every stream.
            timeout=anthropic.Timeout(None, connect=self.timeouts.connect),
            # The process's one TLS context: a Celery worker makes a client per model step.
            http_client=anthropic.DefaultAsyncHttpxClient(verify=tls_context()),
        )

    async def aclose(self) -> None:
        """Close the clients (and their pooled connections) of the running event loop."""
        for client in self._clients.pop_current():
            await client.close()

    async def _stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        api_key = self.api_key if request.api_key is None else request.api_key
        create = self._clients.get(request.base_url or self.base_url, api_key).messages.with_streaming_response.create
        try:
            async with create(**request_params(request)) as response:
                async with aclosing(relay(response.http_response.aiter_bytes(), EventReader())) as events:
                    async for event in events:
                        yield event
        except anthropic.APIStatusError as exc:
            yield error_from_status(exc.status_code, exc.response.headers, exc.body)
        except anthropic.APITimeoutError:
            yield StreamError(ErrorCode.TIMEOUT, "The request timed out before the reply started.")
        except anthropic.APIConnectionError as exc:
            yield StreamError(ErrorCode.PROVIDER_UNAVAILABLE, f"Could not connect: {exc.__cause__ or exc}")
        except anthropic.AnthropicError as exc:
            yield StreamError(ErrorCode.PROVIDER_UNAVAILABLE, str(exc))


def request_params(request: ChatRequest) -> dict[str, Any]:
    params: dict[str, Any] = {
        "model": request.model,
        "messages": [plain_turn(message) for message in request.messages],
        "max_tokens": request.max_output_tokens,
        "stream": True,
    }
    if request.system:
        params["system"] = request.system
    # The SDK (2.x) no longer names the sampling options, though the API takes them: they go as
    # extra body fields, which the SDK merges into the JSON it sends.
    sampling = {"temperature": request.temperature, "top_p": request.top_p}
    sampling = {key: value for key, value in sampling.items() if value is not None}
    if sampling:
        params["extra_body"] = sampling
    if request.stop:
        params["stop_sequences"] = list(request.stop)
    if request.tools:
        # Only a call that offers tools can hold tool turns: plain chat sends its messages as they are.
        params["messages"] = tool_turns(request.messages)
        params["tools"] = [
            {"name": spec["name"], "description": spec["description"], "input_schema": spec["parameters"]}
            for spec in request.tools
        ]
        if request.tool_choice is not None:
            params["tool_choice"] = tool_choice(request.tool_choice)
    return params


def tool_choice(choice: str | dict[str, str]) -> dict[str, str]:
    """Parley's "auto", "none", "required" or {"name"} as the API's {type: auto|none|any|tool}."""
    if isinstance(choice, dict):
        return {"type": "tool", "name": choice["name"]}
    return {"type": "any" if choice == "required" else choice}


def tool_turns(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tool calls become `tool_use` blocks of the assistant's turn, and their results `tool_result`
    blocks of one user turn (the API wants them together, right after the calls)."""
    out: list[dict[str, Any]] = []
    for message in messages:
        if message.get("tool_calls"):
            blocks = [{"type": "text", "text": message["content"]}] if message.get("content") else []
            blocks += [
                {"type": "tool_use", "id": call["id"], "name": call["name"], "input": _input_of(call["arguments"])}
                for call in message["tool_calls"]
            ]
            out.append({"role": "assistant", "content": blocks})
        elif message.get("role") == "tool":
            result = {"type": "tool_result", "tool_use_id": message["tool_call_id"], "content": message["content"]}
            if out and out[-1]["role"] == "user" and isinstance(out[-1]["content"], list):
                out[-1]["content"].append(result)
            else:
                out.append({"role": "user", "content": [result]})
        else:
            out.append(plain_turn(message))
    return out


def plain_turn(message: dict[str, Any]) -> dict[str, Any]:
    """A turn as the API takes it: its files' text inside its own, and its images as `image`
    blocks before the text (the API reads a question best after the images it asks about)."""
    if not message.get("attachments"):
        return message
    text = user_text(message)
    images = images_of(message)
    if not images:
        return {"role": message["role"], "content": text}
    blocks: list[dict[str, Any]] = [
        {"type": "image", "source": {"type": "base64", "media_type": image.media_type, "data": image.base64()}}
        for image in images
    ]
    blocks.append({"type": "text", "text": text})
    return {"role": message["role"], "content": blocks}


def _input_of(arguments: str) -> dict[str, Any]:
    # The API takes a tool call's input as an object; arguments a model wrote that were not one
    # were answered as a tool error, and the call is kept as an empty input.
    try:
        parsed = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


class EventReader(StreamReader):
    """message_start, content_block_* (text in text_delta), message_delta, message_stop; pings and
    errors may come at any point."""

    def __init__(self) -> None:
        super().__init__()
        self.model_version = ""
        self.stop_reason = ""
        self.prompt_tokens: int | None = None
        self.completion_tokens: int | None = None
        self.tool_blocks: dict[int, tuple[str, str, list[str]]] = {}  # block index -> id, name, input pieces

    def feed(self, chunk: bytes) -> list[StreamEvent]:
        texts: list[str] = []
        calls: list[StreamEvent] = []
        try:
            for name, data in self.framer.feed(chunk):
                payload = orjson.loads(data)
                # The payload names its own type; the `event:` line is only a fallback for proxies
                # that pass the data through without it.
                kind = payload.get("type") or name.decode()
                if kind == "content_block_delta":
                    delta = payload["delta"]
                    if delta.get("type") == "text_delta":
                        texts.append(delta["text"])
                    elif delta.get("type") == "input_json_delta" and payload.get("index") in self.tool_blocks:
                        self.tool_blocks[payload["index"]][2].append(delta.get("partial_json") or "")
                elif kind == "content_block_start":
                    block = payload.get("content_block") or {}
                    if block.get("type") == "tool_use":
                        self.tool_blocks[payload.get("index", 0)] = (block.get("id") or "", block.get("name") or "", [])
                elif kind == "content_block_stop":
                    if (done := self.tool_blocks.pop(payload.get("index", -1), None)) is not None:
                        calls.append(ToolCall(done[0], done[1], "".join(done[2]) or "{}"))
                elif kind == "message_start":
                    self._start(payload["message"])
                elif kind == "message_delta":
                    self.stop_reason = payload.get("delta", {}).get("stop_reason") or self.stop_reason
                    self._count(payload.get("usage") or {})
                elif kind == "message_stop":
                    return self._end(texts, calls)
                elif kind == "error":
                    return self.fail(texts, error_from_payload(payload))
        except (ValueError, AttributeError, TypeError, KeyError, UnicodeDecodeError) as exc:
            return self.fail(texts, malformed(f"{type(exc).__name__}: {exc}"))
        return ([TextDelta("".join(texts))] if texts else []) + calls

    def _start(self, message: dict[str, Any]) -> None:
        self.model_version = message.get("model") or ""
        self._count(message.get("usage") or {})

    def _count(self, usage: dict[str, Any]) -> None:
        # Usage is cumulative. Cached prompt tokens are reported apart from input_tokens; the
        # prompt's size is their sum.
        if usage.get("input_tokens") is not None:
            self.prompt_tokens = sum(
                usage.get(key) or 0
                for key in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
            )
        if usage.get("output_tokens") is not None:
            self.completion_tokens = usage["output_tokens"]

    def at_eof(self) -> list[StreamEvent]:
        # A stream that ends after the stop reason but before message_stop has said everything.
        return self._end([]) if self.stop_reason else super().at_eof()

    def _end(self, texts: list[str], calls: list[StreamEvent] | None = None) -> list[StreamEvent]:
        self.ended = True
        events: list[StreamEvent] = ([TextDelta("".join(texts))] if texts else []) + (calls or [])
        reason = STOP_REASONS.get(self.stop_reason, self.stop_reason or "stop")
        events += [Usage(self.prompt_tokens, self.completion_tokens), Finish(reason, self.model_version)]
        return events
