"""A fake OpenAI-compatible Chat Completions upstream for the benchmark, cheap enough to share 2 cores.

`POST /v1/chat/completions` with `stream: true` answers like the real API: a role chunk, one
`chat.completion.chunk` per token, a chunk with `finish_reason`, a usage chunk (when
`stream_options.include_usage` is set) and `data: [DONE]`. Chunks have the real API's shape and size.

Every token's text is `" t<seq>:<us>"`: its sequence number (0..count-1) and the upstream's wall
clock (`time.time_ns() // 1000`) at the moment the chunk is written to the socket. A client on the
same machine subtracts that from its own arrival time to get the relay delay of each token, and
checks the sequence numbers for lost or duplicated tokens. Because the time is taken when the
chunk is written, the upstream's own lateness never counts against the server under test.

Pacing: tokens of a stream are due at `start + first + seq / rate`. One task pops every due token
from a heap and writes it, so 10,000 tokens a second cost a timer wake-up per millisecond, not
one per token; streams start at different moments, so their tokens are spread, not in lockstep.

Defaults come from the command line; a model name may override them after `#`, e.g.
`bench-model#tokens=1&rate=0` or `bench-hold#first=60` (first token after 60 s).

Tool calls, for agent runs (bench/agents.py): with `tools=K` (and `calls=C`, default 1), a request
that offers tools and holds fewer than K tool results is answered at once with C streamed calls of
`calculate` (`{"expression": "<a> + <b>"}`, id and name first, the arguments in two pieces, then
`finish_reason: "tool_calls"`); once it holds K, with the text answer of the shape above. So a run
takes ceil(K / C) + 1 model steps and K tool steps.

`GET /stats` returns counters and the upstream's own lateness (write time minus due time);
`?reset=1` clears them. Run: `python -m bench.upstream --port 8001 --tokens 200 --rate 50`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import heapq
import itertools
import time
from dataclasses import dataclass, replace
from urllib.parse import parse_qsl

import orjson
from aiohttp import web


@dataclass(frozen=True, slots=True)
class Shape:
    tokens: int = 200
    rate: float = 50.0  # tokens a second; 0 writes them all at once
    first: float = 0.0  # seconds before the first token
    tools: int = 0  # tool results a request must hold before it gets a text answer
    calls: int = 1  # tool calls per answer until then

    def overridden(self, query: str) -> Shape:
        changes = {}
        for key, value in parse_qsl(query):
            if key in {"tokens", "tools", "calls"}:
                changes[key] = int(value)
            elif key in {"rate", "first"}:
                changes[key] = float(value)
        return replace(self, **changes)


def token_text(seq: int) -> bytes:
    return b" t%d:%d" % (seq, time.time_ns() // 1000)


class Stream:
    __slots__ = ("count", "due_ns", "finished", "gone", "interval_ns", "prefix", "response", "seq", "suffix", "usage")

    def __init__(self, response: web.StreamResponse, model: str, shape: Shape, include_usage: bool, prompt_tokens: int):
        base = orjson.dumps({"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": int(time.time()),
                             "model": model, "system_fingerprint": "fp_bench"})[:-1]
        # Token text is ASCII digits, so it can be spliced into pre-encoded JSON without escaping.
        self.prefix = b"data: " + base + b',"choices":[{"index":0,"delta":{"content":"'
        self.suffix = b'"},"logprobs":null,"finish_reason":null}]}\n\n'
        self.response = response
        self.count = shape.tokens
        self.interval_ns = int(1e9 / shape.rate) if shape.rate > 0 else 0
        self.due_ns = time.monotonic_ns() + int(shape.first * 1e9)
        self.seq = 0
        self.finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.gone = False
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": shape.tokens, "total_tokens": prompt_tokens + shape.tokens}
        tail = [b"data: " + base + b',"choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]}\n\n']
        if include_usage:
            tail.append(b"data: " + base + b',"choices":[],"usage":' + orjson.dumps(usage) + b"}\n\n")
        tail.append(b"data: [DONE]\n\n")
        self.usage = b"".join(tail)

    def role_frame(self) -> bytes:
        return self.prefix[: -len(b'"content":"')] + b'"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}\n\n'


def tool_call_frames(model: str, count: int, results: int, include_usage: bool, prompt_tokens: int) -> bytes:
    """A whole streamed answer of `count` calls of `calculate`, as the real API streams them."""
    base = orjson.dumps({"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": int(time.time()),
                         "model": model, "system_fingerprint": "fp_bench"})[:-1]

    def chunk(delta: dict, finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return b"data: " + base + b',"choices":' + orjson.dumps([choice]) + b"}\n\n"

    frames = [chunk({"role": "assistant", "content": None})]
    for index in range(count):
        arguments = orjson.dumps({"expression": f"{results + index} + {index + 1}"}).decode()
        half = len(arguments) // 2
        frames.append(chunk({"tool_calls": [{"index": index, "id": f"call_{results + index}", "type": "function",
                                             "function": {"name": "calculate", "arguments": ""}}]}))
        frames += [chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
                   for piece in (arguments[:half], arguments[half:])]
    frames.append(chunk({}, "tool_calls"))
    if include_usage:
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": 12 * count, "total_tokens": prompt_tokens + 12 * count}
        frames.append(b"data: " + base + b',"choices":[],"usage":' + orjson.dumps(usage) + b"}\n\n")
    frames.append(b"data: [DONE]\n\n")
    return b"".join(frames)


class Upstream:
    def __init__(self, shape: Shape) -> None:
        self.shape = shape
        self.heap: list[tuple[int, int, Stream]] = []
        self.order = itertools.count()
        self.wake = asyncio.Event()
        self.requests = 0
        self.tokens = 0
        self.active = 0
        self.disconnects = 0
        self.lateness_us: list[int] = []
        self.ticker: asyncio.Task[None] | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        model = str(body.get("model", ""))
        _, _, query = model.partition("#")
        shape = self.shape.overridden(query)
        limit = body.get("max_tokens") or body.get("max_completion_tokens")
        if limit:
            shape = replace(shape, tokens=min(shape.tokens, int(limit)))
        prompt = sum(len(str(m.get("content", ""))) for m in body.get("messages", [])) // 4 + 1
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        self.requests += 1
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        results = sum(1 for m in body.get("messages", []) if m.get("role") == "tool")
        if shape.tools and body.get("tools") and results < shape.tools:
            await response.write(tool_call_frames(model.partition("#")[0], min(shape.calls, shape.tools - results), results,
                                                  include_usage, prompt))
            await response.write_eof()
            return response
        stream = Stream(response, model.partition("#")[0], shape, include_usage, prompt)
        await response.write(stream.role_frame())
        self.active += 1
        self._schedule(stream)
        try:
            await stream.finished
            await response.write_eof()
        except (asyncio.CancelledError, ConnectionError):
            stream.gone = True
            self.disconnects += 1
            raise
        finally:
            self.active -= 1
        return response

    def _schedule(self, stream: Stream) -> None:
        heapq.heappush(self.heap, (stream.due_ns, next(self.order), stream))
        self.wake.set()

    async def tick(self) -> None:
        heap = self.heap
        while True:
            if not heap:
                self.wake.clear()
                await self.wake.wait()
                continue
            wait_ns = heap[0][0] - time.monotonic_ns()
            if wait_ns > 0:
                self.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), wait_ns / 1e9)
                continue
            now = time.monotonic_ns()
            while heap and heap[0][0] <= now:
                due, _, stream = heapq.heappop(heap)
                if stream.gone:
                    continue
                await self._write_next(stream, due)

    async def _write_next(self, stream: Stream, due: int) -> None:
        try:
            if stream.interval_ns == 0:  # unpaced: everything at once
                frames = [stream.prefix + token_text(seq) + stream.suffix for seq in range(stream.count)]
                await stream.response.write(b"".join(frames) + stream.usage)
                self.tokens += stream.count
                stream.seq = stream.count
            else:
                if stream.seq < stream.count:
                    await stream.response.write(stream.prefix + token_text(stream.seq) + stream.suffix)
                    self.tokens += 1
                    stream.seq += 1
                if stream.seq >= stream.count:
                    await stream.response.write(stream.usage)
        except (ConnectionError, RuntimeError) as exc:
            stream.gone = True
            if not stream.finished.done():
                stream.finished.set_exception(ConnectionResetError(str(exc)))
            return
        if len(self.lateness_us) < 1_000_000:
            self.lateness_us.append((time.monotonic_ns() - due) // 1000)
        if stream.seq >= stream.count:
            if not stream.finished.done():
                stream.finished.set_result(None)
            return
        stream.due_ns = due + stream.interval_ns
        heapq.heappush(self.heap, (stream.due_ns, next(self.order), stream))

    async def stats(self, request: web.Request) -> web.Response:
        late = sorted(self.lateness_us)

        def pct(p: float) -> float | None:
            return late[min(len(late) - 1, int(p * len(late)))] / 1000 if late else None

        body = {"requests": self.requests, "tokens": self.tokens, "active": self.active, "disconnects": self.disconnects,
                "late_ms_p50": pct(0.5), "late_ms_p99": pct(0.99), "late_ms_max": late[-1] / 1000 if late else None}
        if request.query.get("reset"):
            self.lateness_us = []
        return web.json_response(body)

    async def start(self, port: int = 0) -> tuple[web.AppRunner, int]:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self.handle)
        app.router.add_get("/stats", self.stats)
        runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, backlog=4096).start()
        self.ticker = asyncio.create_task(self.tick())
        return runner, runner.addresses[0][1]


def install_uvloop() -> bool:
    try:
        import uvloop
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description="Fake OpenAI streaming upstream for the Parley benchmark")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--rate", type=float, default=50.0, help="tokens a second per stream (0: unpaced)")
    parser.add_argument("--first", type=float, default=0.0, help="seconds before the first token")
    args = parser.parse_args()
    install_uvloop()

    async def serve() -> None:
        upstream = Upstream(Shape(args.tokens, args.rate, args.first))
        runner, port = await upstream.start(args.port)
        print(f"listening on http://127.0.0.1:{port}/v1", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


if __name__ == "__main__":
    main()
