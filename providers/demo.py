"""The offline demo model: no network, no key, a deterministic reply streamed word by word.

It exists so that a fresh install can be tried at once, and so that tests and benchmarks have a
provider whose output they control. Control words in the last user message:

- `/words N`  the reply is exactly N words, "word1 word2 ... wordN" (N up to 5000);
- `/fail CODE` after a couple of words the stream ends with `StreamError(ErrorCode(CODE))`;
- `/slow MS`  each word waits MS milliseconds (up to 5000) instead of the configured pace.

A request's `stop` sequences cut the reply where the first of them begins, as the APIs do.

A call that offers tools follows a fixed plan instead (providers/demo_plan.py).

The canned reply names each file the last user message carries ("I read a file: notes.txt (120
characters)", "I see an image: red.png, 40×30"), as a model that read them would.

The user's words are quoted back verbatim, markup included: making them inert is the renderer's
job, and this reply is how the tests prove it does.
"""

import asyncio
import re
from collections import Counter
from collections.abc import AsyncIterator

from django.conf import settings

from providers import demo_plan
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
    Image,
    TextFile,
    Usage,
    estimate_tokens,
    user_text,
)

MODEL_VERSION = "parley-demo-1"
MAX_WORDS = 5000
MAX_SLOW_MS = 5000
WORDS_BEFORE_FAILING = 2
CALL_THINKING_TOKENS = 4

_WORDS = re.compile(r"(?:^|\s)/words\s+(\d+)")
_FAIL = re.compile(r"(?:^|\s)/fail\s+(\w+)")
_SLOW = re.compile(r"(?:^|\s)/slow\s+(\d+)")
_PIECE = re.compile(r"\s*\S+")  # a word with the whitespace before it, as LLM tokens come
_CONTROLS = re.compile(r"(?:^|\s)/(?:words|slow)\s+\d+|(?:^|\s)/fail\s+\w+")


def without_controls(said: str) -> str:
    """The user's words without the demo's control syntax (`/words N`, `/slow MS`, `/fail CODE`)."""
    return " ".join(_CONTROLS.sub(" ", said).split())

CODE_BLOCK = '''```python
from collections import Counter


def most_frequent(text: str) -> tuple[str, int] | None:
    """The most frequent word of `text` and how often it occurs."""
    counts = Counter(text.lower().split())
    return counts.most_common(1)[0] if counts else None
```'''


class DemoProvider(Provider):
    name = "demo"
    label = "Parley demo"
    capabilities = Capabilities(needs_key=False)
    chunks_are_tokens = True  # a piece is a token of its usage

    def __init__(self, timeouts: Timeouts | None = None, *, tokens_per_second: float | None = None) -> None:
        super().__init__(timeouts)
        self.tokens_per_second = tokens_per_second

    async def _stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        if request.tools and (call := demo_plan.next_call(request)) is not None:
            # A model takes a moment to decide on a call: a few tokens' time (`/slow` stretches it).
            await asyncio.sleep(self._delay(last_user_text(request)) * CALL_THINKING_TOKENS)
            yield call
            yield Usage(prompt_tokens(request), estimate_tokens(call.arguments))
            yield Finish("tool_calls", model_version=MODEL_VERSION)
            return
        said = last_user_text(request)
        pieces = _PIECE.findall(demo_plan.final_answer(request)) if request.tools else reply_pieces(request, said)
        pieces = cut_at_stop(pieces, request.stop)
        failure = requested_failure(said)
        delay = self._delay(said)
        loop = asyncio.get_running_loop()
        deadline = loop.time()
        for count, piece in enumerate(pieces):
            if failure is not None and count == WORDS_BEFORE_FAILING:
                yield failure
                return
            # Pace against a clock, so that sleeping late does not slow the whole reply down.
            deadline += delay
            await asyncio.sleep(max(0.0, deadline - loop.time()))
            yield TextDelta(piece)
        if failure is not None:  # a reply shorter than the words before failing
            yield failure
            return
        yield Usage(prompt_tokens(request), len(pieces))
        yield Finish("stop", model_version=MODEL_VERSION)

    def _delay(self, said: str) -> float:
        if match := _SLOW.search(said):
            return min(int(match.group(1)), MAX_SLOW_MS) / 1000
        rate = settings.PARLEY_DEMO_TOKENS_PER_SECOND if self.tokens_per_second is None else self.tokens_per_second
        return 1 / rate if rate > 0 else 0.0


def last_user_text(request: ChatRequest) -> str:
    for message in reversed(request.messages):
        if message.get("role") == "user":
            return message.get("content", "")
    return ""


def prompt_tokens(request: ChatRequest) -> int:
    text = request.system + "".join(user_text(message) for message in request.messages)
    images = sum(item.tokens for message in request.messages for item in message.get("attachments", ()) if isinstance(item, Image))
    return estimate_tokens(text) + images


def last_user_attachments(request: ChatRequest) -> tuple[TextFile | Image, ...]:
    for message in reversed(request.messages):
        if message.get("role") == "user":
            return tuple(message.get("attachments", ()))
    return ()


def acknowledged(attachments: tuple[TextFile | Image, ...]) -> list[str]:
    """What the demo says of the files on the message: it names each, as a model that read them would."""
    lines = []
    for item in attachments:
        if isinstance(item, Image):
            lines.append(f"- I see an image: {item.name}, {item.width}×{item.height}.")
        else:
            lines.append(f"- I read a file: {item.name} ({len(item.text):,} characters).")
    return [*lines, ""] if lines else []


def requested_failure(said: str) -> StreamError | None:
    match = _FAIL.search(said)
    if match is None:
        return None
    try:
        code = ErrorCode(match.group(1))
    except ValueError:
        code = ErrorCode.PROVIDER_UNAVAILABLE
    retry_after = 2.0 if code in {ErrorCode.RATE_LIMITED, ErrorCode.OVERLOADED} else None
    return StreamError(code, f"The demo model was asked to fail with {match.group(1)!r}.", retry_after)


def cut_at_stop(pieces: list[str], stops: tuple[str, ...]) -> list[str]:
    """The pieces up to the first of the stop sequences, which is left out, as the APIs do: the
    reply then ends with finish reason "stop". A sequence may straddle pieces."""
    text = "".join(pieces)
    found = [index for index in (text.find(stop) for stop in stops if stop) if index >= 0]
    if not found:
        return pieces
    end = min(found)
    kept, length = [], 0
    for piece in pieces:
        if length + len(piece) >= end:
            if end > length:
                kept.append(piece[: end - length])
            break
        kept.append(piece)
        length += len(piece)
    return kept


def reply_pieces(request: ChatRequest, said: str) -> list[str]:
    if match := _WORDS.search(said):
        count = min(int(match.group(1)), MAX_WORDS)
        return [f"word{n}" if n == 1 else f" word{n}" for n in range(1, count + 1)]
    return _PIECE.findall(compose_reply(request, said))


def compose_reply(request: ChatRequest, said: str) -> str:
    words = said.split()
    counts = Counter(word.lower() for word in words)
    frequent = ""
    if counts:
        word, times = counts.most_common(1)[0]
        frequent = f"; the most frequent word is “{word}” ({times} {'time' if times == 1 else 'times'})"
    history = len(request.messages)
    system = ", plus a system prompt" if request.system else ""
    # Continuation lines of a multi-line message stay inside the quote.
    quoted = said.replace("\n", "\n> ")
    return "\n".join([
        f"> You said: {quoted}",
        "",
        *acknowledged(last_user_attachments(request)),
        "## Parley's offline demo model",
        "",
        "This reply comes from the **offline demo model** built into Parley: it needs no network and no API key, "
        "and streams a canned answer so that you can try the interface.",
        "",
        f"- Your message has **{len(words)} {'word' if len(words) == 1 else 'words'}** and "
        f"**{len(said)} characters**{frequent}.",
        f"- This conversation holds {history} {'message' if history == 1 else 'messages'}{system}.",
        "- For real answers, set `OPENAI_API_KEY` or `ANTHROPIC_API_KEY`, or point `OPENAI_BASE_URL` at an",
        "  OpenAI-compatible server (vLLM, Ollama, llama.cpp), then choose that model.",
        "",
        "How to find the most frequent word, in Python:",
        "",
        CODE_BLOCK,
    ])
