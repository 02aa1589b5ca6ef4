"""A fake llama.cpp server (`llama-server`): its OpenAI-compatible `POST /v1/chat/completions` with
`stream: true` and `GET /v1/models`, as the real one behaves on the wire (tools/server/ of
ggml-org/llama.cpp), quirks included:

- Chunks are `{"choices": [{"finish_reason": null, "index": 0, "delta": {...}}], "created", "id":
  "chatcmpl-...", "model", "system_fingerprint": "b<build>-<commit>", "object": "chat.completion.chunk"}`.
  The first token follows a chunk whose delta is `{"role": "assistant", "content": null}`; the last
  chunk has the finish reason, an empty delta and llama.cpp's `timings`; then `data: [DONE]`.
- No `usage`: builds that predate `stream_options` ignore `include_usage`, and so does this fake
  unless made with `include_usage=True` (then a last chunk with empty choices and the usage, which
  carries the timings instead, as newer builds send).
- `max_tokens` (or llama.cpp's own `n_predict`, which wins) is the only limit it reads; without
  either the model writes until the client hangs up (`FOREVER`). `max_completion_tokens` is ignored.
  `Scenario.tokens` is where the model would end on its own (its end-of-sequence token): "stop";
  a reply cut by the limit ends "length". `Scenario.reasoning` tokens of thinking stream first as
  `reasoning_content` deltas (as with `--reasoning-format deepseek`) and count against the limit.
- Errors have `format_error_response`'s shape `{"error": {"code", "message", "type"}}`: a body that
  is not JSON gets HTTP 500 `server_error` with nlohmann's `[json.exception.parse_error.101] ...`
  (scenario `parse_error` answers so to any body); a prompt of `n_ctx` tokens or more (or scenario
  `context_length`) 400 `exceed_context_size_error` with `n_prompt_tokens` and `n_ctx`; every route
  while the model loads (`loading=True`, or scenario `loading`) 503 `unavailable_error` "Loading
  model"; a wrong key (`api_key`, as `--api-key`) 401; scenario `server_error` a 500 "Compute error.";
  scenario `status` a bare status from a proxy in front (an HTML page). `error_in_stream` fails after
  `after` tokens with `data: {"error": ...}` and no `[DONE]`.
- Status and headers leave with the first result, after the prompt is processed (`slow_first` waits
  `delay` there), so a refused prompt is an HTTP error. `legacy_errors=True` is a build from before
  autumn 2025 (ggml-org/llama.cpp#16109, #16486): 200 at once, then the error as a non-standard
  `error: {...}` SSE field (which a strict SSE parser drops), then `data: [DONE]`.
- A client that hangs up stops the generation. Each reply is a `Generation` in `server.generations`
  (tokens asked for and produced, whether it stopped early, when); `server.stopped_early` counts
  those cut short by a hang-up, and `GET /_fake/generations` serves the list to another process.

Usage: `async with LlamaCppFake() as server: ... server.base_url ...`, or as a process:
`python -m tests.fakes.llamacpp_server --port 8080 --rate 50 [--include-usage] [--legacy-errors]`.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import string
import time
from http import HTTPStatus
from dataclasses import dataclass, replace
from typing import Any, Self

import orjson
from aiohttp import web

from tests.fakes import FakeServer, Scenario, cli, token

FOREVER = 1_000_000  # "until the client hangs up": llama.cpp's n_predict of -1
BUILD = "b6532-7d1f5c2a"  # system_fingerprint: llama.cpp's build number and commit
CONTEXT_MESSAGE = "the request exceeds the available context size, try increasing it"
LOADING_MESSAGE = "Loading model"
STATE_ROUTE = "/_fake/generations"
PROXY_PAGE = "<html><head><title>{status}</title></head><body><center><h1>{status}</h1></center></body></html>"


@dataclass(slots=True)
class Generation:
    """One reply the fake model wrote, or began to."""

    requested: int | None  # max_tokens / n_predict as sent; None: neither
    asked: str = ""  # the start of the last message, to tell replies apart
    produced: int = 0  # tokens generated, reasoning included
    stopped_early: bool = False  # the client hung up before the end
    started: float = 0.0  # time.monotonic()
    ended: float | None = None

    def as_json(self) -> dict[str, Any]:
        return {"requested": self.requested, "asked": self.asked, "produced": self.produced,
                "stopped_early": self.stopped_early, "started": self.started, "ended": self.ended}


class LlamaCppFake(FakeServer):
    route = "/v1/chat/completions"
    error_kinds = frozenset({"parse_error", "context_length", "loading", "server_error", "unauthorized", "status"})
    default_tokens = FOREVER

    def __init__(
        self,
        scenario: Scenario | None = None,
        *,
        api_key: str | None = None,
        models: list[str] | None = None,
        include_usage: bool = False,
        legacy_errors: bool = False,
        n_ctx: int = 4096,
        n_ctx_train: int = 32768,
        loading: bool = False,
        loading_seconds: float = 0.0,
    ) -> None:
        super().__init__(scenario, api_key=api_key, models=models or ["local-model.gguf"])
        self.include_usage = include_usage  # honour stream_options.include_usage, as newer builds do
        self.legacy_errors = legacy_errors  # a build from before autumn 2025 (see the module's docstring)
        self.n_ctx = n_ctx  # the slot's context: a prompt this long or longer is refused
        self.n_ctx_train = n_ctx_train
        self.loading = loading  # answer 503 "Loading model" to everything
        self.loading_seconds = loading_seconds  # from start(): loading for this long, then ready
        self.generations: list[Generation] = []
        self.generation_stopped = asyncio.Event()  # set when a hang-up stops a generation

    @property
    def base_url(self) -> str:
        return f"{self.origin}/v1"

    @property
    def stopped_early(self) -> int:
        """How many generations a client's hang-up stopped."""
        return sum(generation.stopped_early for generation in self.generations)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get(STATE_ROUTE, self._state)

    async def start(self, port: int = 0) -> Self:
        await super().start(port)
        if self.loading_seconds > 0:
            self.loading = True
            asyncio.get_running_loop().call_later(self.loading_seconds, setattr, self, "loading", False)
        return self

    # Requests ----------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        # llama.cpp answers every route 503 until its model is loaded, before reading anything.
        if self.loading:
            return self.error_response(503, replace(self.scenario, kind="loading"))
        return await super()._handle(request)

    async def _list_models(self, request: web.Request) -> web.Response:
        # The model list is public (no key needed), but not while the model loads.
        self.listings += 1
        if self.loading:
            return self.error_response(503, replace(self.scenario, kind="loading"))
        return web.json_response(self.model_list(request))

    async def _state(self, request: web.Request) -> web.Response:
        return web.json_response([generation.as_json() for generation in self.generations])

    def _key_matches(self, request: web.Request) -> bool:
        sent = request.headers.get("Authorization") or request.headers.get("X-Api-Key") or ""
        return sent.removeprefix("Bearer ") == self.api_key

    def model_list(self, request: web.Request) -> dict[str, Any]:
        created = int(time.time())
        meta = {"vocab_type": 2, "n_vocab": 151936, "n_ctx": self.n_ctx, "n_ctx_train": self.n_ctx_train,
                "n_embd": 2048, "n_params": 3_085_938_688, "size": 1_929_903_264}
        return {
            "models": [{"name": name, "model": name, "modified_at": "", "size": "", "digest": "", "type": "model",
                        "description": "", "tags": [""], "capabilities": ["completion"]} for name in self.models],
            "object": "list",
            "data": [{"id": name, "object": "model", "created": created, "owned_by": "llamacpp", "meta": meta}
                     for name in self.models],
        }

    def status_for(self, kind: str, scenario: Scenario) -> int:
        return {"parse_error": 500, "server_error": 500, "context_length": 400, "loading": 503,
                "unauthorized": 401}.get(kind, scenario.status)

    def error_response(self, status: int, scenario: Scenario, **extra: Any) -> web.Response:
        # No retry hints: llama.cpp sends neither `retry-after` nor `x-should-retry`.
        if scenario.kind == "status":
            page = PROXY_PAGE.format(status=f"{status} {HTTPStatus(status).phrase}")
            return web.Response(status=status, text=page, content_type="text/html")
        body = {"error": {**self.error_body(status, scenario), **extra}}
        return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")

    def error_body(self, status: int, scenario: Scenario) -> dict[str, Any]:
        """The inner error object, in `format_error_response`'s key order."""
        kind = scenario.kind
        if kind == "parse_error":
            return {"code": 500, "message": parse_error_message(1, 1, "invalid literal", "<"), "type": "server_error"}
        if kind == "context_length":
            return {"code": 400, "message": CONTEXT_MESSAGE, "type": "exceed_context_size_error"}
        if kind == "loading" or status == 503:
            return {"code": 503, "message": LOADING_MESSAGE, "type": "unavailable_error"}
        if status == 401:
            return {"code": 401, "message": "Invalid API Key", "type": "authentication_error"}
        if status >= 500:
            return {"code": 500, "message": "Compute error.", "type": "server_error"}
        return {"code": 400, "message": "Invalid request.", "type": "invalid_request_error"}

    def unreadable_body(self, exc: orjson.JSONDecodeError, scenario: Scenario) -> web.Response:
        # nlohmann's json::parse throws, the handler's exception wrapper answers 500 server_error.
        message = parse_error_message(exc.lineno, exc.colno, "invalid literal", exc.doc[exc.pos : exc.pos + 1])
        body = {"error": {"code": 500, "message": message, "type": "server_error"}}
        return web.Response(status=500, body=orjson.dumps(body), content_type="application/json")

    # The reply ---------------------------------------------------------------------------------

    async def stream_reply(self, request: web.Request, scenario: Scenario, model: str) -> web.StreamResponse:
        body = self.last.json
        requested = _limit(body)
        prompt = prompt_tokens(body)
        if prompt >= self.n_ctx:
            context_error = {"n_prompt_tokens": prompt, "n_ctx": self.n_ctx}
            if self.legacy_errors:
                return await self._legacy_error(request, replace(scenario, kind="context_length"), context_error)
            return self.error_response(400, replace(scenario, kind="context_length"), **context_error)
        generation = Generation(requested, _last_message(body)[:80], started=time.monotonic())
        self.generations.append(generation)
        try:
            response = await self.open_stream(request) if self.legacy_errors else None
            if scenario.kind == "slow_first":
                await asyncio.sleep(scenario.delay)  # processing the prompt
            if response is None:
                response = await self.open_stream(request)
            await self._generate(request, response, scenario, model, body, generation, prompt)
        except (ConnectionError, asyncio.CancelledError):
            generation.stopped_early = True
            generation.ended = time.monotonic()
            self.generation_stopped.set()
            raise
        generation.ended = time.monotonic()
        return response

    async def _generate(
        self, request: web.Request, response: web.StreamResponse, scenario: Scenario, model: str,
        body: dict[str, Any], generation: Generation, prompt: int,
    ) -> None:
        limit = FOREVER if generation.requested is None else generation.requested
        if scenario.ignore_max_tokens:
            limit = FOREVER
        chunk = _ChunkMaker(model)
        frames = [chunk.frame({"role": "assistant", "content": None})]
        thinking = min(scenario.reasoning, limit)
        answer = min(scenario.tokens, limit - thinking)
        for index in range(thinking + answer):
            answering = index >= thinking
            position = index - thinking
            if answering and position == scenario.after and scenario.kind in {"cut", "stall", "error_in_stream"}:
                await self.send(response, frames, scenario)
                frames = []
                if scenario.kind == "cut":
                    self.abort(request)
                    return
                if scenario.kind == "stall":
                    await asyncio.sleep(scenario.delay)
                if scenario.kind == "error_in_stream":
                    await self._send_error(response, {"code": 500, "message": "Compute error.", "type": "server_error"})
                    return
            generation.produced += 1
            delta = {"content": token(position)} if answering else {"reasoning_content": token(index)}
            frames.append(chunk.frame(delta))
            if len(frames) >= scenario.batch:
                await self.send(response, frames, scenario)
                frames = []
                await self.pace(scenario)
        reason = "stop" if scenario.tokens <= limit - thinking else "length"
        timings = _timings(prompt, generation.produced, time.monotonic() - generation.started)
        if self.include_usage and (body.get("stream_options") or {}).get("include_usage"):
            # The timings ride on the last chunk, which is then the usage's.
            frames += [chunk.frame({}, reason), chunk.usage_frame(prompt, generation.produced, timings)]
        else:
            frames.append(chunk.frame({}, reason, timings))
        frames.append(b"data: [DONE]\n\n")
        await self.send(response, frames, scenario)
        await response.write_eof()

    async def _send_error(self, response: web.StreamResponse, error: dict[str, Any]) -> None:
        """An error after the headers: `data: {"error": ...}` and the end (no [DONE]); in builds before
        autumn 2025, an `error:` field and then [DONE]."""
        if self.legacy_errors:
            await response.write(b"error: " + orjson.dumps(error) + b"\n\ndata: [DONE]\n\n")
        else:
            await response.write(b"data: " + orjson.dumps({"error": error}) + b"\n\n")
        await response.write_eof()

    async def _legacy_error(self, request: web.Request, scenario: Scenario, extra: dict[str, Any]) -> web.StreamResponse:
        response = await self.open_stream(request)
        await self._send_error(response, {**self.error_body(400, scenario), **extra})
        return response

    # Command line ------------------------------------------------------------------------------

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--include-usage", action="store_true", help="honour stream_options.include_usage")
        parser.add_argument("--legacy-errors", action="store_true", help="errors as builds before autumn 2025 send them")
        parser.add_argument("--n-ctx", type=int, default=4096, help="the slot's context size")
        parser.add_argument("--loading-seconds", type=float, default=0.0, help="answer 503 for this long first")

    @classmethod
    def options(cls, args: argparse.Namespace) -> dict[str, Any]:
        return {"include_usage": args.include_usage, "legacy_errors": args.legacy_errors, "n_ctx": args.n_ctx,
                "loading_seconds": args.loading_seconds}


def parse_error_message(line: int, column: int, what: str, last_read: str) -> str:
    """nlohmann::json's words for a body it cannot parse (json.exception.parse_error.101)."""
    return (f"[json.exception.parse_error.101] parse error at line {line}, column {column}: "
            f"syntax error while parsing value - {what}; last read: '{last_read}'")


def prompt_tokens(body: dict[str, Any]) -> int:
    """The prompt's tokens as a chat template makes them: about four characters a token, and a few
    more a turn for its markers."""
    messages = body.get("messages") or []
    return sum(len(str(message.get("content") or "")) // 4 + 4 for message in messages) + 3


def _last_message(body: dict[str, Any]) -> str:
    messages = body.get("messages") or [{}]
    content = messages[-1].get("content")
    return content if isinstance(content, str) else ""


def _limit(body: dict[str, Any]) -> int | None:
    """n_predict, else max_tokens, as llama.cpp reads them; a negative one means no limit."""
    for key in ("n_predict", "max_tokens"):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return None if value < 0 else value
    return None


def _timings(prompt: int, predicted: int, seconds: float) -> dict[str, Any]:
    prompt_ms, predicted_ms = 5.0 + prompt * 0.2, max(seconds * 1000, 0.001)
    return {
        "cache_n": 0, "prompt_n": prompt, "prompt_ms": prompt_ms, "prompt_per_token_ms": prompt_ms / max(prompt, 1),
        "prompt_per_second": 1000 * prompt / prompt_ms, "predicted_n": predicted, "predicted_ms": predicted_ms,
        "predicted_per_token_ms": predicted_ms / max(predicted, 1), "predicted_per_second": 1000 * predicted / predicted_ms,
    }


class _ChunkMaker:
    """llama.cpp's chunk, its keys in its order."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.id = "chatcmpl-" + "".join(random.choices(string.ascii_letters + string.digits, k=32))
        self.created = int(time.time())

    def _chunk(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {"choices": choices, "created": self.created, "id": self.id, "model": self.model,
                "system_fingerprint": BUILD, "object": "chat.completion.chunk"}

    def frame(self, delta: dict[str, Any], finish_reason: str | None = None, timings: dict[str, Any] | None = None) -> bytes:
        chunk = self._chunk([{"finish_reason": finish_reason, "index": 0, "delta": delta}])
        if timings is not None:
            chunk["timings"] = timings
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    def usage_frame(self, prompt: int, completion: int, timings: dict[str, Any]) -> bytes:
        usage = {"completion_tokens": completion, "prompt_tokens": prompt, "total_tokens": prompt + completion,
                 "prompt_tokens_details": {"cached_tokens": 0}}
        return b"data: " + orjson.dumps({**self._chunk([]), "usage": usage, "timings": timings}) + b"\n\n"


if __name__ == "__main__":
    cli(LlamaCppFake, "Fake llama.cpp server (llama-server's OpenAI-compatible API)")
