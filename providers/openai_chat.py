"""OpenAI Chat Completions, and every server that speaks it (vLLM, Ollama, llama.cpp, ...).

The SDK sends the request (auth, base URL, retries until the response headers arrive) in its
raw streaming-response mode; the body is framed and decoded here (see `sse_wire`), because
iterating the SDK's typed chunk objects costs several times the CPU per token of this path.
"""

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any
from urllib.parse import urlsplit

import openai
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
    Thinking,
    Timeouts,
    ToolCall,
    Usage,
    images_of,
    user_text,
)
from providers.sse_wire import ClientCache, StreamReader, error_from_payload, error_from_status, malformed, relay, tls_context

DEFAULT_BASE_URL = "https://api.openai.com/v1"
# Local servers ignore the key, but the SDK refuses to build a client without one.
PLACEHOLDER_KEY = "sk-no-key-required"
# The SDK's switch for a response whose body is left unread, to be streamed by the caller.
RAW_STREAM = {"X-Stainless-Raw-Response": "stream"}


class OpenAIProvider(Provider):
    name = "openai"
    label = "OpenAI"
    capabilities = Capabilities()
    buffers_unread_events = True
    chunks_are_tokens = True  # OpenAI and the compatible servers (vLLM, llama.cpp, Ollama) stream a token a chunk

    def __init__(
        self,
        timeouts: Timeouts | None = None,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        max_retries: int | None = None,
    ) -> None:
        super().__init__(timeouts)
        self.api_key = settings.OPENAI_API_KEY if api_key is None else api_key
        self.base_url = (settings.OPENAI_BASE_URL if base_url is None else base_url) or DEFAULT_BASE_URL
        self.max_retries = settings.PROVIDER_MAX_RETRIES if max_retries is None else max_retries
        self._clients: ClientCache[openai.AsyncOpenAI] = ClientCache(self._new_client)

    def _new_client(self, base_url: str, api_key: str) -> openai.AsyncOpenAI:
        # The configured key goes to per-model base URLs too: those are set by an administrator.
        return openai.AsyncOpenAI(
            api_key=api_key or PLACEHOLDER_KEY,
            base_url=base_url,
            max_retries=self.max_retries,
            # No socket read timeout: Provider.stream's first-token and idle limits govern silence,
            # and a read timeout would re-arm a timer on every chunk of every stream.
            timeout=openai.Timeout(None, connect=self.timeouts.connect),
            # aiohttp under the SDK's client: reading the body costs about half the CPU per chunk of
            # the default httpcore/anyio stack (bench/load.py, docs/benchmarks.md).
            http_client=openai.DefaultAioHttpClient(verify=tls_context()),
        )

    async def aclose(self) -> None:
        """Close the clients (and their pooled connections) of the running event loop."""
        for client in self._clients.pop_current():
            await client.close()

    async def _stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent | Thinking]:
        base_url = request.base_url or self.base_url
        client = self._clients.get(base_url, self.api_key if request.api_key is None else request.api_key)
        try:
            # `client.post` rather than `chat.completions.create`: the latter first walks the whole
            # body through the SDK's typed-dict transform, a cost that grows with the history (and
            # changes nothing for plain strings). RAW_STREAM is what `with_streaming_response` sets.
            response = await client.post(
                "/chat/completions", body=request_params(request, base_url), cast_to=object, options={"headers": RAW_STREAM}
            )
            try:
                async with aclosing(relay(response.http_response.aiter_bytes(), ChunkReader())) as events:
                    async for event in events:
                        yield event
            finally:
                await response.close()
        except openai.APIStatusError as exc:
            yield error_from_status(exc.status_code, exc.response.headers, exc.body)
        except openai.APITimeoutError as exc:
            refused = connect_failure(exc)
            if refused is not None:
                yield StreamError(ErrorCode.PROVIDER_UNAVAILABLE, f"Could not connect: {refused}")
            else:
                yield StreamError(ErrorCode.TIMEOUT, "The request timed out before the reply started.")
        except openai.APIConnectionError as exc:
            yield StreamError(ErrorCode.PROVIDER_UNAVAILABLE, f"Could not connect: {exc.__cause__ or exc}")
        except openai.OpenAIError as exc:
            yield StreamError(ErrorCode.PROVIDER_UNAVAILABLE, str(exc))


def connect_failure(exc: BaseException) -> OSError | None:
    """The refused or failed connection behind a "timeout", if that is what it really was.

    The SDK's aiohttp transport maps every aiohttp connection error, a refused connection
    included, to a connect timeout; the original error is kept as the cause.
    """
    cause = exc.__cause__
    while cause is not None:
        if isinstance(cause, OSError) and not isinstance(cause, TimeoutError):
            return cause
        cause = cause.__cause__
    return None


def request_params(request: ChatRequest, base_url: str) -> dict[str, Any]:
    messages: list[dict[str, Any]] = [{"role": "system", "content": request.system}] if request.system else []
    params = {
        "model": request.model,
        "messages": messages,
        "stream": True,
        "stream_options": {"include_usage": True},
        max_tokens_param(base_url): request.max_output_tokens,
    }
    if request.temperature is not None:
        params["temperature"] = request.temperature
    if request.top_p is not None:
        params["top_p"] = request.top_p
    if request.stop:
        params["stop"] = list(request.stop)
    # A gateway client's history may hold tool turns even in a call that offers no tools now.
    messages.extend(map(_tool_turn, request.messages))
    if request.tools:
        params["tools"] = [{"type": "function", "function": spec} for spec in request.tools]
        if request.tool_choice is not None:
            params["tool_choice"] = tool_choice_param(request.tool_choice)
    return params


def tool_choice_param(choice: str | dict[str, str]) -> str | dict[str, Any]:
    """Parley's tool choice in OpenAI's shape: "auto", "none", "required" as they are, a named
    tool as {type: function, function: {name}}."""
    if isinstance(choice, str):
        return choice
    return {"type": "function", "function": {"name": choice["name"]}}


def _plain_turn(message: dict[str, Any]) -> dict[str, Any]:
    """A turn as the API takes it: its files' text inside its own, and its images as content parts."""
    if not message.get("attachments"):
        return message
    text = user_text(message)
    images = images_of(message)
    if not images:
        return {"role": message["role"], "content": text}
    parts: list[dict[str, Any]] = [{"type": "text", "text": text}]
    parts += [{"type": "image_url", "image_url": {"url": f"data:{image.media_type};base64,{image.base64()}"}} for image in images]
    return {"role": message["role"], "content": parts}


def _tool_turn(message: dict[str, Any]) -> dict[str, Any]:
    if message.get("tool_calls"):
        calls = [
            {"id": call["id"], "type": "function", "function": {"name": call["name"], "arguments": call["arguments"]}}
            for call in message["tool_calls"]
        ]
        return {"role": "assistant", "content": message.get("content") or None, "tool_calls": calls}
    if message.get("role") == "tool":
        return {"role": "tool", "tool_call_id": message["tool_call_id"], "content": message["content"]}
    return _plain_turn(message)


def max_tokens_param(base_url: str) -> str:
    """`max_tokens` for compatible servers, `max_completion_tokens` for OpenAI itself.

    `max_tokens` is what vLLM, Ollama and llama.cpp all understand (some older ones know nothing
    else); OpenAI deprecated it and its reasoning models (o-series, gpt-5) reject it, while
    `max_completion_tokens` works with every OpenAI chat model.
    """
    return "max_completion_tokens" if urlsplit(base_url).hostname == "api.openai.com" else "max_tokens"


class ChunkReader(StreamReader):
    """`data: {chat.completion.chunk}` events until `data: [DONE]`.

    What the compatible servers add is read or left alone on purpose:
    - no `usage` (llama.cpp builds that predate `stream_options`): the reply's `Usage` is unknown,
      and the ledger bills its estimate, marked estimated (billing/ledger.py);
    - `timings` (llama.cpp's speeds and counts) and `system_fingerprint` (its build): left alone.
      The timings are no bill: only the last chunk has them (a stopped or cut reply never does),
      their `prompt_n` leaves out the prompt's cached part, and their fields vary between builds;
    - a role chunk whose `content` is null: no text;
    - a reasoning model's `reasoning_content` (llama.cpp, vLLM; `reasoning` in newer vLLM and
      Ollama): not the answer, so not reply text (it would also be sent back as history), but
      `Thinking`: the model is working, and spending output;
    - an error after the headers as `data: {"error": ...}` or llama.cpp's older `error:` line.
    """

    def __init__(self) -> None:
        super().__init__()
        self.finish_reason = ""
        self.model_version = ""
        self.usage = Usage(None, None)  # compatible servers may ignore include_usage
        self.tool_calls: dict[int, tuple[str, str, list[str]]] = {}  # index -> id, name, argument pieces

    def feed(self, chunk: bytes) -> list[StreamEvent | Thinking]:
        texts: list[str] = []
        thoughts: list[str] = []
        try:
            for event, data in self.framer.feed(chunk):
                if data == b"[DONE]":
                    return self._end(texts)
                payload = orjson.loads(data)
                if event == b"error" and "error" not in payload:
                    payload = {"error": payload}  # llama.cpp's old `error:` line holds the inner object
                choices = payload.get("choices")
                if choices:
                    choice = choices[0]
                    delta = choice.get("delta")
                    if delta:
                        if thought := delta.get("reasoning_content") or delta.get("reasoning"):
                            thoughts.append(thought)
                        if text := delta.get("content"):
                            texts.append(text)
                        if calls := delta.get("tool_calls"):
                            self._add_tool_pieces(calls)
                    if reason := choice.get("finish_reason"):
                        self.finish_reason = reason
                elif payload.get("error"):
                    return self.fail(texts, error_from_payload(payload))
                if usage := payload.get("usage"):
                    self.usage = Usage(usage.get("prompt_tokens"), usage.get("completion_tokens"))
                if not self.model_version:
                    self.model_version = payload.get("model") or ""
        except (ValueError, AttributeError, TypeError, KeyError, IndexError) as exc:
            return self.fail(texts, malformed(f"{type(exc).__name__}: {exc}"))
        events: list[StreamEvent | Thinking] = [Thinking("".join(thoughts), tuple(thoughts))] if thoughts else []
        if texts:
            events.append(TextDelta("".join(texts), tuple(texts)))
        return events

    def at_eof(self) -> list[StreamEvent]:
        # A server that stops after the finish reason but before [DONE] has said everything.
        return self._end([]) if self.finish_reason else super().at_eof()

    def _add_tool_pieces(self, calls: list[dict[str, Any]]) -> None:
        """A tool call streams as pieces keyed by its index: id and name first, then its arguments' text."""
        for piece in calls:
            index = piece.get("index", 0)
            function = piece.get("function") or {}
            call_id, name, arguments = self.tool_calls.get(index, ("", "", []))
            self.tool_calls[index] = (call_id or piece.get("id") or "", name or function.get("name") or "", arguments)
            if function.get("arguments"):
                arguments.append(function["arguments"])

    def _end(self, texts: list[str]) -> list[StreamEvent]:
        self.ended = True
        events: list[StreamEvent] = [TextDelta("".join(texts), tuple(texts))] if texts else []
        events += [ToolCall(call_id, name, "".join(pieces)) for call_id, name, pieces in self.tool_calls.values()]
        events += [self.usage, Finish(self.finish_reason or "stop", self.model_version)]
        return events
