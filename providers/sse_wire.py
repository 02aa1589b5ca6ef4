"""What the HTTP adapters share: SSE framing, body reading, SDK client caching, error mapping.

The adapters let the SDKs build and send the request (auth, base URL, retries until the response
headers arrive), then read the body as raw bytes: the SDKs' typed stream objects cost hundreds of
microseconds of CPU a token, while framing bytes here and decoding each `data:` line with orjson
costs about 4 microseconds.
"""

import asyncio
import functools
import re
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping
from email.utils import parsedate_to_datetime

import httpx2

from providers.base import ErrorCode, StreamError, StreamEvent, TextDelta, Thinking

MESSAGE_LIMIT = 300  # provider messages go to logs, not to people; keep them short


# Framing -----------------------------------------------------------------------------------------


class SSEFramer:
    """Turns a byte stream into `(event, data)` pairs, one per blank-line-terminated SSE event.

    Reads end anywhere - mid-line, mid-UTF-8 character - so the unfinished line is carried over
    to the next read; nothing is decoded until a whole `data:` payload is known. Lines end in LF
    or CRLF (every API we speak to); a lone CR as line end, which no LLM server sends, is not
    supported. Comments, `id:` and `retry:` carry nothing an adapter uses and are skipped.
    """

    __slots__ = ("_carry", "_event", "_data")

    def __init__(self) -> None:
        self._carry = b""
        self._event = b""
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> list[tuple[bytes, bytes]]:
        if self._carry:
            chunk = self._carry + chunk
        lines = chunk.split(b"\n")
        self._carry = lines.pop()
        events: list[tuple[bytes, bytes]] = []
        for line in lines:
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:
                if self._data:
                    data = self._data[0] if len(self._data) == 1 else b"\n".join(self._data)
                    events.append((self._event, data))
                    self._data = []
                self._event = b""
            elif line.startswith(b"data:"):
                self._data.append(line[6:] if line.startswith(b"data: ") else line[5:])
            elif line.startswith(b"event:"):
                self._event = line[6:].strip()
            elif line.startswith(b"error:"):
                # Not an SSE field: llama.cpp until September 2025 (ggml-org/llama.cpp#16109) sent
                # an error after the headers as `error: {...}`, then `data: [DONE]`. A parser that
                # drops the line takes the stream for an empty, complete reply.
                self._event = b"error"
                self._data.append(line[7:] if line.startswith(b"error: ") else line[6:])
        return events


# Reading ---------------------------------------------------------------------------------------

# Everything reading the raw body can raise that means "the upstream went wrong", as opposed to a bug.
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (httpx2.HTTPError, httpx2.StreamError, OSError)

CUT_OFF = StreamError(ErrorCode.PROVIDER_UNAVAILABLE, "The connection ended before the reply was complete.")


def malformed(detail: str) -> StreamError:
    # A chunk we cannot decode is the provider's (or a proxy's) fault, not the request's, and a
    # retry may well succeed: provider_unavailable, not bad_request.
    return StreamError(ErrorCode.PROVIDER_UNAVAILABLE, f"Malformed stream chunk: {detail}"[:MESSAGE_LIMIT])


class StreamReader:
    """Turns one API's body bytes into normalized events; an adapter subclasses it per API.

    `feed` returns the events one read produced: the text of every chunk in it joined into a
    single `TextDelta` (fewer events downstream, same text), then at most one ending event.
    Once an ending event (`Finish` or `StreamError`) is returned, `ended` is set.
    """

    def __init__(self) -> None:
        self.framer = SSEFramer()
        self.ended = False
        self.failed = False

    def feed(self, chunk: bytes) -> list[StreamEvent | Thinking]:
        raise NotImplementedError

    def at_eof(self) -> list[StreamEvent]:
        """The events owed when the body ends without the API's final marker."""
        return [CUT_OFF]

    def fail(self, texts: list[str], error: StreamError) -> list[StreamEvent]:
        """End with `error`, after the text this read did carry."""
        self.ended = self.failed = True
        return [TextDelta("".join(texts)), error] if texts else [error]


async def relay(body: AsyncIterator[bytes], reader: StreamReader) -> AsyncIterator[StreamEvent | Thinking]:
    """Read raw body chunks through `reader` until it ends; a broken connection becomes an error.

    Callers wrap this in `contextlib.aclosing` so that the response body iterator is closed as
    soon as the consumer stops, not whenever the garbage collector gets to it.
    """
    try:
        async for chunk in body:
            for event in reader.feed(chunk):
                yield event
            if reader.ended:
                if not reader.failed:
                    await _read_to_end(body)
                return
    except TRANSPORT_ERRORS as exc:
        yield error_from_transport(exc)
        return
    finally:
        aclose = getattr(body, "aclose", None)
        if aclose is not None:
            await aclose()
    for event in reader.at_eof():
        yield event


# The body's last chunk follows the API's end marker at once; a server that holds it back is not waited for.
BODY_END_WAIT = 0.05


async def _read_to_end(body: AsyncIterator[bytes]) -> None:
    """Read what follows the end marker, so that the connection returns to the pool for the next
    request instead of being closed under the server's last write."""
    try:
        async with asyncio.timeout(BODY_END_WAIT):
            async for _ in body:
                pass
    except (TimeoutError, *TRANSPORT_ERRORS):
        pass


# Clients -----------------------------------------------------------------------------------------


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The TLS context of the adapters' SDK clients (the SDKs' default settings), built once per
    process: loading the certificate store costs about 20 ms of CPU, and a Celery worker makes a
    client per model step of an agent run (a fresh event loop each): half its CPU (bench/agents.py)."""
    return httpx2.create_ssl_context()


class ClientCache[C]:
    """One SDK client per (event loop, base URL, key).

    A client pools connections bound to the loop that opened them, so a process that runs a
    fresh loop per job (`asyncio.run` in a worker task, a test per loop) must not reuse a client
    across loops. Clients of closed loops are dropped when a new loop first asks.
    """

    def __init__(self, factory: Callable[[str, str], C]) -> None:
        self._factory = factory
        self._by_loop: dict[asyncio.AbstractEventLoop, dict[tuple[str, str], C]] = {}

    def get(self, base_url: str, api_key: str) -> C:
        loop = asyncio.get_running_loop()
        clients = self._by_loop.get(loop)
        if clients is None:
            self._by_loop = {known: c for known, c in self._by_loop.items() if not known.is_closed()}
            clients = self._by_loop[loop] = {}
        client = clients.get((base_url, api_key))
        if client is None:
            client = clients[base_url, api_key] = self._factory(base_url, api_key)
        return client

    def pop_current(self) -> list[C]:
        """Forget the clients of the running loop and return them, for closing."""
        return list(self._by_loop.pop(asyncio.get_running_loop(), {}).values())


# Error mapping ---------------------------------------------------------------------------------

# OpenAI says `context_length_exceeded`; Anthropic "prompt is too long: N tokens > M maximum" or
# "input length and `max_tokens` exceed context limit"; vLLM "maximum context length"; llama.cpp
# `exceed_context_size_error`, "the request exceeds the available context size, try increasing it"
# (older builds: the same words as an `invalid_request_error`).
_CONTEXT_MESSAGE = re.compile(
    r"prompt is too long|context (length|limit|window|size)|maximum context|too many tokens",
    re.IGNORECASE,
)
_CONTEXT_CODES = {"context_length_exceeded", "request_too_large", "string_above_max_length", "exceed_context_size_error"}

# A server error whose body says the request itself could not be read. llama.cpp turns every
# exception in a handler into HTTP 500 `server_error`, the JSON parser's too: a body it cannot parse
# is "[json.exception.parse_error.101] ...", turns it cannot read "Failed to parse messages: ...",
# and a model's output its chat template cannot place "Failed to parse input at pos N". Sending the
# same request again fails the same way, after another prompt's work (and in the last case a whole
# generation), so these are bad_request and not retried; a bare 500 or 502 stays provider_unavailable.
_INVALID_REQUEST_MESSAGE = re.compile(r"parse[_ ]error|failed to parse|invalid json", re.IGNORECASE)

_BY_TYPE = {
    "overloaded_error": ErrorCode.OVERLOADED,
    "rate_limit_error": ErrorCode.RATE_LIMITED,
    "rate_limit_exceeded": ErrorCode.RATE_LIMITED,
    "authentication_error": ErrorCode.AUTH_FAILED,
    "permission_error": ErrorCode.AUTH_FAILED,
    "invalid_api_key": ErrorCode.AUTH_FAILED,
    "timeout_error": ErrorCode.TIMEOUT,
    "invalid_request_error": ErrorCode.BAD_REQUEST,
    "not_found_error": ErrorCode.BAD_REQUEST,
    "request_too_large": ErrorCode.CONTEXT_TOO_LONG,
    "unavailable_error": ErrorCode.OVERLOADED,  # llama.cpp while it loads its model (HTTP 503)
}
# Types that refine a 5xx too: the server is busy, not broken.
_BUSY_TYPES = {"overloaded_error", "unavailable_error"}

_BY_STATUS = {
    401: ErrorCode.AUTH_FAILED,
    403: ErrorCode.AUTH_FAILED,
    408: ErrorCode.TIMEOUT,
    413: ErrorCode.CONTEXT_TOO_LONG,
    429: ErrorCode.RATE_LIMITED,
    503: ErrorCode.OVERLOADED,
    504: ErrorCode.TIMEOUT,
    529: ErrorCode.OVERLOADED,
}


def classify(status: int | None, error_type: str = "", code: str = "", message: str = "") -> ErrorCode:
    """The one place that decides an error code, from whatever the provider told us.

    `status` is None for errors reported inside a 200 stream.
    """
    client_side = status is None or 400 <= status < 500
    if client_side and (code in _CONTEXT_CODES or error_type in _CONTEXT_CODES or _CONTEXT_MESSAGE.search(message)):
        return ErrorCode.CONTEXT_TOO_LONG
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    # The body's type refines a bare status (an overloaded_error with a 500) and is all an
    # in-stream error has.
    for key in (error_type, code):
        if key in _BY_TYPE and (client_side or key in _BUSY_TYPES):
            return _BY_TYPE[key]
    # Whatever the status, a body saying the request itself was unreadable (llama.cpp's 500 for a
    # JSON parse error) will be refused again: bad_request, never retried. Beside the regex above.
    if error_type == "invalid_request_error" or _INVALID_REQUEST_MESSAGE.search(message):
        return ErrorCode.BAD_REQUEST
    if status is not None and 400 <= status < 500:
        return ErrorCode.BAD_REQUEST
    return ErrorCode.PROVIDER_UNAVAILABLE


def error_fields(body: object) -> tuple[str, str, str]:
    """(type, code, message) from an error body of either API, however much of it there is.

    OpenAI: {"error": {"type", "code", "message"}} (the SDK may hand over the inner dict);
    Anthropic: {"type": "error", "error": {"type", "message"}}; anything else: text.
    """
    if isinstance(body, Mapping):
        inner = body.get("error")
        if isinstance(inner, Mapping):
            body = inner
        elif isinstance(inner, str):  # some compatible servers: {"error": "message"}
            return "", "", inner
        return str(body.get("type") or ""), str(body.get("code") or ""), str(body.get("message") or "")
    if isinstance(body, (str, bytes)):
        return "", "", body if isinstance(body, str) else body.decode("utf-8", "replace")
    return "", "", ""


def error_from_status(status: int, headers: Mapping[str, str], body: object) -> StreamError:
    error_type, code, message = error_fields(body)
    return StreamError(
        classify(status, error_type, code, message),
        f"HTTP {status}: {message or error_type or code}"[:MESSAGE_LIMIT],
        retry_after_seconds(headers),
    )


def error_from_payload(payload: Mapping[str, object]) -> StreamError:
    """An error event inside a stream (Anthropic `event: error`, OpenAI-compatible `{"error": ...}`)."""
    error_type, code, message = error_fields(payload)
    inner = payload.get("error")
    status = None
    if isinstance(inner, Mapping) and isinstance(inner.get("code"), int):
        status = inner["code"]  # vLLM puts the HTTP status there
    return StreamError(classify(status, error_type, code, message), (message or error_type)[:MESSAGE_LIMIT])


def error_from_transport(exc: BaseException) -> StreamError:
    """A failure while reading the body, after the SDK handed it over."""
    if isinstance(exc, httpx2.TimeoutException):
        return StreamError(ErrorCode.TIMEOUT, f"Read timed out: {type(exc).__name__}")
    detail = f"Connection failed mid-reply: {type(exc).__name__}: {exc}"
    return StreamError(ErrorCode.PROVIDER_UNAVAILABLE, detail[:MESSAGE_LIMIT])


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from `retry-after-ms`, or `retry-after` as seconds or an HTTP date."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        seconds = _number(raw_ms)
        if seconds is not None:
            return seconds / 1000
    raw = headers.get("retry-after")
    if not raw:
        return None
    seconds = _number(raw)
    if seconds is not None:
        return seconds
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _number(raw: str) -> float | None:
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if 0 <= value < float("inf") else None
