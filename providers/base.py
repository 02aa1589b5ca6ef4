"""The one streaming interface every provider adapter implements.

An adapter turns a `ChatRequest` into an async stream of normalized events. It never lets an SDK
object escape, never touches the database, and reports every failure as a `StreamError` carrying
one of the shared error codes, as the last event of the stream.
"""

import asyncio
import base64
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar


class ErrorCode(StrEnum):
    RATE_LIMITED = "rate_limited"
    OVERLOADED = "overloaded"
    CONTEXT_TOO_LONG = "context_too_long"
    AUTH_FAILED = "auth_failed"
    BAD_REQUEST = "bad_request"
    TIMEOUT = "timeout"
    PROVIDER_UNAVAILABLE = "provider_unavailable"
    CANCELLED = "cancelled"


HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.OVERLOADED: 503,
    ErrorCode.CONTEXT_TOO_LONG: 413,
    ErrorCode.AUTH_FAILED: 502,
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.TIMEOUT: 504,
    ErrorCode.PROVIDER_UNAVAILABLE: 502,
    ErrorCode.CANCELLED: 499,
}

PLAIN_WORDS: dict[ErrorCode, str] = {
    ErrorCode.RATE_LIMITED: "The model provider is receiving too many requests right now. Try again shortly.",
    ErrorCode.OVERLOADED: "The model provider is overloaded right now. Try again in a little while.",
    ErrorCode.CONTEXT_TOO_LONG: "This conversation is too long for the model. Start a new conversation or shorten your message.",
    ErrorCode.AUTH_FAILED: "Parley could not sign in to the model provider. An administrator needs to check the API key.",
    ErrorCode.BAD_REQUEST: "The model provider rejected the request.",
    ErrorCode.TIMEOUT: "The model took too long to answer.",
    ErrorCode.PROVIDER_UNAVAILABLE: "The model provider could not be reached.",
    ErrorCode.CANCELLED: "The reply was cancelled.",
}


@dataclass(frozen=True, slots=True)
class TextFile:
    """A text file attached to a user turn: sent inside the turn's text, delimited by its name."""

    name: str
    text: str

    @property
    def block(self) -> str:
        return file_block(self.name, self.text)

    @property
    def tokens(self) -> int:
        # One more for the blank line that parts it from the next file or the message (`user_text`):
        # the sum of the parts' estimates is then never below the estimate of the whole text.
        return estimate_tokens(self.block) + 1


@dataclass(frozen=True, slots=True)
class Image:
    """An image attached to a user turn, for models that can see; each adapter sends it in its
    API's shape. `data` is the file's bytes, `media_type` one of IMAGE_TYPES."""

    name: str
    media_type: str
    data: bytes = field(repr=False)
    width: int
    height: int

    @property
    def tokens(self) -> int:
        return image_tokens(self.width, self.height)

    def base64(self) -> str:
        return base64.b64encode(self.data).decode("ascii")


Attachment = TextFile | Image
IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
# What the providers make of an image: Anthropic counts about width × height / 750 tokens after
# scaling it to at most ~1.15 megapixels (~1,600 tokens); OpenAI's tiles land in the same range.
# One estimate for both, so the prompt's reservation never depends on the adapter.
IMAGE_PIXELS_PER_TOKEN = 750
IMAGE_MAX_TOKENS = 1600
IMAGE_MIN_TOKENS = 85


def image_tokens(width: int, height: int) -> int:
    return max(IMAGE_MIN_TOKENS, min(IMAGE_MAX_TOKENS, -(-width * height // IMAGE_PIXELS_PER_TOKEN)))


def file_block(name: str, text: str) -> str:
    """A text file as the model reads it: the name on the opening tag (quotes taken out, so that
    the name cannot close it), the text, the closing tag on a line of its own."""
    safe = name.replace('"', "'")
    return f'<file name="{safe}">\n{text}\n</file>'


def user_text(message: dict[str, Any]) -> str:
    """A user turn's text with its attached text files before it (a question reads best after
    the document it asks about)."""
    files = [item.block for item in message.get("attachments", ()) if isinstance(item, TextFile)]
    content = message.get("content") or ""
    return "\n\n".join([*files, content]) if files else content


def images_of(message: dict[str, Any]) -> list[Image]:
    return [item for item in message.get("attachments", ()) if isinstance(item, Image)]


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """What a model is asked, in Parley's own terms; each adapter translates it to its API's.

    `messages` are `{"role": "user"|"assistant", "content": str}`; a call that offers `tools` may
    also hold the turns of earlier tool calls: `{"role": "assistant", "content": str, "tool_calls":
    [{"id", "name", "arguments"}]}` and `{"role": "tool", "tool_call_id": str, "content": str}`.
    `tools` are `{"name", "description", "parameters"}` with parameters as a JSON Schema object.
    A user turn may carry `"attachments"`: a tuple of `TextFile` and `Image`; adapters send the
    files through `user_text` and the images in their API's shape.
    """

    model: str
    messages: list[dict[str, Any]]
    system: str = ""
    max_output_tokens: int = 1024
    base_url: str = ""
    tools: tuple[dict[str, Any], ...] = ()
    temperature: float | None = None  # None: the provider's default
    stop: tuple[str, ...] = ()  # sequences that end the output where the model writes them
    # Which of `tools` the model must or may call: "auto", "none", "required", or {"name": ...}; None: the API's default.
    tool_choice: str | dict[str, str] | None = None
    top_p: float | None = None
    # The endpoint's key for this call; None: the adapter's own (from the settings). Never shown.
    api_key: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str
    # The provider's chunks merged into `text`, when known: how it was read, not what it says.
    chunks: tuple[str, ...] = field(default=(), compare=False)

    @property
    def pieces(self) -> int:
        return len(self.chunks) or 1


@dataclass(frozen=True, slots=True)
class ToolCall:
    """The model asks for a tool. `arguments` is the JSON text it wrote, unparsed: it may not be
    valid, and the caller tells the model so rather than failing."""

    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int | None
    completion_tokens: int | None


@dataclass(frozen=True, slots=True)
class Finish:
    reason: str  # "stop", "length", "content_filter", ...
    model_version: str = ""


@dataclass(frozen=True, slots=True)
class StreamError:
    code: ErrorCode
    message: str = ""
    retry_after: float | None = None

    @property
    def plain_words(self) -> str:
        return PLAIN_WORDS[self.code]

    @property
    def retryable(self) -> bool:
        return self.code in {ErrorCode.RATE_LIMITED, ErrorCode.OVERLOADED, ErrorCode.TIMEOUT, ErrorCode.PROVIDER_UNAVAILABLE}


StreamEvent = TextDelta | ToolCall | Usage | Finish | StreamError


@dataclass(frozen=True, slots=True)
class Thinking:
    """Output the model writes but the reply does not show: a reasoning model's thinking, streamed
    apart from its answer (`reasoning_content` from llama.cpp, vLLM and Ollama).

    Adapters yield it and `Provider.stream` keeps it to itself: it is not silence (a model may
    think for minutes before its first word, well past the first-token limit), and it is output
    the server counts against max_tokens, so it counts against the reply's output cap too; but it
    is never part of the reply, its history or its events."""

    text: str
    chunks: tuple[str, ...] = field(default=(), compare=False)

    @property
    def pieces(self) -> int:
        return len(self.chunks) or 1


@dataclass(frozen=True, slots=True)
class Capabilities:
    system_prompt: bool = True  # False: the system prompt is folded into the first user turn
    needs_key: bool = True


@dataclass(slots=True)
class Timeouts:
    connect: float = 10.0
    first_token: float = 60.0
    idle: float = 30.0


class Provider:
    """Base class of adapters: subclasses implement `_stream`; `stream` adds the shared timeouts."""

    name: ClassVar[str]
    label: ClassVar[str]
    capabilities: ClassVar[Capabilities] = Capabilities()
    # True when events not yet asked for wait in a socket buffer (the HTTP adapters), so a reader
    # may come back for them later and get them all at once; False for a source that only makes
    # an event when asked (the demo model).
    buffers_unread_events: ClassVar[bool] = False
    # True when each streamed chunk carries one token, so that counting chunks counts the output.
    chunks_are_tokens: ClassVar[bool] = False

    def __init__(self, timeouts: Timeouts | None = None) -> None:
        self.timeouts = timeouts or Timeouts()

    async def _stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent | Thinking]:
        raise NotImplementedError
        yield  # pragma: no cover

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        """Yield normalized events; a `StreamError` or `Finish` ends the stream.

        The output is cut at `request.max_output_tokens` (estimated as it streams) even when the
        provider ignores the limit: the call's budget was reserved for that much and no more.
        """
        if request.system and not self.capabilities.system_prompt:
            request = fold_system_prompt(request)
        events = self._stream(request).__aiter__()
        silence = _SilenceTimer()
        meter = OutputMeter(request.max_output_tokens, self.chunks_are_tokens)
        limit = self.timeouts.first_token
        try:
            while True:
                try:
                    event = await silence.wait(events.__anext__(), limit)
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    phase = "the first token" if silence.before_first else "the next token"
                    yield StreamError(ErrorCode.TIMEOUT, f"No answer within {limit:g}s waiting for {phase}.")
                    return
                if isinstance(event, (TextDelta, Thinking)):
                    if silence.before_first:
                        silence.before_first = False
                        limit = self.timeouts.idle
                    kept = meter.take(event)
                    if kept is not event:
                        if kept.text and isinstance(event, TextDelta):
                            yield kept
                        yield Finish("length")
                        return
                    if isinstance(event, Thinking):
                        continue  # a sign of life and output spent, never part of the reply
                yield event
                if isinstance(event, StreamError):
                    return
        finally:
            silence.close()
            await _close_quietly(events)

    async def aclose(self) -> None:
        """Release what the adapter holds for the running event loop (pooled connections)."""


def fold_system_prompt(request: ChatRequest) -> ChatRequest:
    """For a model without system prompts: the prompt leads the first user turn instead."""
    messages = list(request.messages)
    for index, message in enumerate(messages):
        if message.get("role") == "user":
            messages[index] = {**message, "content": f"{request.system}\n\n{message.get('content', '')}"}
            break
    else:
        messages.insert(0, {"role": "user", "content": request.system})
    return dataclasses.replace(request, messages=messages, system="")


def estimate_tokens(text: str) -> int:
    """Parley's one count of tokens in a text no provider has counted: about four characters a
    token for ASCII, rounded up, and about a token a character beyond it (CJK text takes one or two
    tokens a character, so four characters a token would reserve far too little).

    History fitting and the reservation of a prompt (chat/history.py), the cut of a reply at its
    reserved output (`OutputMeter`) and the ledger's bill of a reply the provider did not count
    (billing/ledger.py) all use it, so what is reserved, cut and billed agree."""
    return _tokens(len(text), len(text.encode()) - len(text))


def _tokens(chars: int, extra_bytes: int) -> int:
    # 1 to 3 extra UTF-8 bytes a character beyond ASCII: half a token each.
    return (chars + 3) // 4 + extra_bytes // 2


class OutputMeter:
    """A reply's output so far, to end it at its reserved output even if the provider ignores
    max_tokens. Where a provider's chunks are a token each (`chunks_are_tokens`), it counts chunks,
    and an obedient provider is never cut: it stops at the limit itself. Otherwise it estimates
    from the text, which reads up to a third high beyond ASCII, so it cuts only half again past the
    limit; the ledger never bills more than the limit for output it had to estimate (billing.ledger)."""

    def __init__(self, limit: int, chunks_are_tokens: bool) -> None:
        self.limit = limit
        self.chunks_are_tokens = chunks_are_tokens
        self.cut_at = limit if chunks_are_tokens else limit + limit // 2 + 8
        self.chars = self.extra_bytes = self.pieces = 0

    def take(self, delta: TextDelta | Thinking) -> TextDelta | Thinking:
        """The delta itself while the output fits; otherwise the part that does (maybe empty), and
        the stream must end there."""
        if self.chunks_are_tokens:
            if self.pieces + delta.pieces <= self.cut_at:
                self.pieces += delta.pieces
                return delta
            room = max(0, self.cut_at - self.pieces)
            self.pieces = self.cut_at
            return TextDelta("".join(delta.chunks[:room]))
        # Running totals through `_tokens` give `estimate_tokens` of the whole text so far
        # without reading it again at every delta.
        chars, extra = len(delta.text), len(delta.text.encode()) - len(delta.text)
        if _tokens(self.chars + chars, self.extra_bytes + extra) <= self.cut_at:
            self.chars, self.extra_bytes = self.chars + chars, self.extra_bytes + extra
            return delta
        kept: list[str] = []
        for char in delta.text:
            extra = len(char.encode()) - 1
            if _tokens(self.chars + 1, self.extra_bytes + extra) > self.cut_at:
                break
            self.chars, self.extra_bytes = self.chars + 1, self.extra_bytes + extra
            kept.append(char)
        return TextDelta("".join(kept))


class _SilenceTimer:
    """`asyncio.wait_for` for every event of a stream, with one timer for the whole stream.

    A timer per event (what wait_for sets up and cancels) costs microseconds per token on the
    event loop of every stream; here each wait only moves a deadline, and the timer, when it
    fires early, re-arms itself for the current deadline. On expiry the waiting task is
    cancelled and the cancellation turned into TimeoutError, as asyncio.timeout does.
    """

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.deadline = 0.0
        self.handle: asyncio.TimerHandle | None = None
        self.task: asyncio.Task | None = None
        self.expired = False
        self.before_first = True

    async def wait[T](self, awaitable: "Awaitable[T]", seconds: float) -> T:
        task = self.task = asyncio.current_task()
        assert task is not None
        cancelling = task.cancelling()
        self.deadline = self.loop.time() + seconds
        if self.handle is not None and self.handle.when() > self.deadline:  # the limit got shorter
            self.handle.cancel()
            self.handle = None
        if self.handle is None:
            self.handle = self.loop.call_at(self.deadline, self._check)
        try:
            return await awaitable
        except asyncio.CancelledError:
            if self.expired and task.uncancel() <= cancelling:
                raise TimeoutError from None
            raise
        finally:
            self.task = None

    def _check(self) -> None:
        self.handle = None
        if self.task is None:  # not waiting: the next wait arms the timer again
            return
        if self.loop.time() < self.deadline:
            self.handle = self.loop.call_at(self.deadline, self._check)
            return
        self.expired = True
        self.task.cancel()

    def close(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None


async def _close_quietly(events: AsyncIterator[StreamEvent]) -> None:
    aclose = getattr(events, "aclose", None)
    if aclose is not None:
        try:
            await aclose()
        except Exception:  # noqa: BLE001 - closing a broken stream must not mask the real outcome
            pass


@dataclass(slots=True)
class CollectedReply:
    """A whole reply gathered from a stream, for callers that do not stream (titles, agent steps)."""

    text: str = ""
    usage: Usage | None = None
    error: StreamError | None = None
    finish: Finish | None = None
    deltas: list[str] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)
    first_text_at: float | None = None  # time.monotonic() when the first text arrived (time to first token)


async def collect(provider: Provider, request: ChatRequest) -> CollectedReply:
    return await collect_events(provider.stream(request))


async def collect_events(stream: AsyncIterator[Any]) -> CollectedReply:
    """A whole reply from a stream of normalized events (other objects in it are passed over)."""
    reply = CollectedReply()
    async for event in stream:
        match event:
            case TextDelta(text=text):
                if reply.first_text_at is None:
                    reply.first_text_at = time.monotonic()
                reply.deltas.append(text)
            case ToolCall():
                reply.tool_calls.append(event)
            case Usage():
                reply.usage = event
            case Finish():
                reply.finish = event
            case StreamError():
                reply.error = event
    reply.text = "".join(reply.deltas)
    return reply
