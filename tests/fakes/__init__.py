"""Local stand-ins for the OpenAI and Anthropic streaming APIs, shared by tests and benchmarks.

Each fake is an aiohttp server on 127.0.0.1 that speaks its API's real SSE wire format, so the
real SDKs and adapters run unmodified against it. What a request gets is a `Scenario`, resolved in
this order (later wins):

1. the server's `scenario` attribute (tests: `server.scenario = Scenario("cut", tokens=5)`);
2. a suffix on the model name after `#`, e.g. `gpt-4o-mini#scenario=rate_limited&retry_after=3`
   (reaches the fake through the whole app, e.g. from a catalogue row);
3. an `X-Fake-Scenario` request header with the same `key=value&...` syntax.

Scenario kinds: ok, rate_limited (429), server_error (500), unauthorized (401), context_length
and bad_request (400), status (any `status=N`, e.g. 503), overloaded (HTTP 529) and
overloaded_in_stream (an `event: error` mid-reply; both Anthropic only), cut (abort the connection
mid-body), truncate (clean end of body without the final marker), malformed (an undecodable chunk
mid-reply), slow_first (headers at once, first token after `delay`), stall (`delay` mid-reply). With
`ignore_max_tokens=1` a reply streams all its `tokens` whatever the request's max_tokens. tool_call: a
request that offers tools gets a streamed call of `tool_name` (else its first tool) with `tool_arguments` (in pieces,
as the APIs send them); once the request holds that tool's result, a normal reply.
Error kinds (and cut, truncate, malformed, slow_first, stall) apply to the first `times` requests
only (default: all), so retries can be tested.

`GET /v1/models` lists `server.models` (ids; set at construction or any time after) in the API's
own shape, behind the same key check; `server.listings` counts those requests.

Every request is recorded in `server.requests`; a client that goes away mid-reply sets
`server.disconnected` (an asyncio.Event) and bumps `server.disconnects`.

Usage: `async with OpenAIFake() as server: ... server.base_url ...`, or as a process:
`python -m tests.fakes.openai_server --port 8001 --tokens 200 --rate 50`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from dataclasses import dataclass, field, fields, replace
from typing import Any, Self
from urllib.parse import parse_qsl

import orjson
from aiohttp import web

SCENARIO_HEADER = "X-Fake-Scenario"

# Tokens chosen to exercise reassembly: multi-byte UTF-8 (split across reads), quotes, markup,
# newlines and leading spaces all have to come out byte-for-byte.
VOCABULARY = ("Hello", ",", " wörld", " —", " 🙂", " <b>", "\n", ' "quoted"', " naïve", " 漢字", ".", " ok")


def token(index: int) -> str:
    return VOCABULARY[index % len(VOCABULARY)]


def expected_text(tokens: int) -> str:
    """The exact reply a normal scenario streams for `tokens` tokens."""
    return "".join(token(i) for i in range(tokens))


@dataclass(slots=True)
class Scenario:
    kind: str = "ok"
    tokens: int = 12
    rate: float = 0.0  # tokens a second; 0 streams as fast as the socket takes them
    delay: float = 5.0  # slow_first: before the first token; stall: before giving up
    after: int = 3  # tokens sent before cut / malformed / stall / in-stream errors
    status: int = 500  # for kind "status"
    retry_after: str = "7"  # header value on 429 (seconds or an HTTP date)
    retry_after_ms: str = ""  # `retry-after-ms` header, when set
    times: int = 0  # error kinds apply to the first `times` requests; 0 means always
    batch: int = 1  # events per socket write, to exercise several events in one read
    fragment: int = 0  # split each write into pieces of this many bytes (lines across reads)
    ignore_max_tokens: int = 0  # 1: stream all `tokens` whatever max_tokens says, as a misbehaving server does
    hidden_tokens: int = 0  # output billed in the usage but never streamed (a reasoning model's thinking)
    reasoning: int = 0  # tokens of thinking streamed apart from the answer (llama.cpp's `reasoning_content` deltas)
    tool_arguments: str = '{"expression": "6 * 7"}'  # tool_call: the arguments' JSON text, as the model writes it
    tool_name: str = ""  # tool_call: the tool called; "" calls the first one offered

    def called_tool(self, offered: list[str]) -> str:
        return self.tool_name or offered[0]

    def overridden(self, query: str) -> Scenario:
        """This scenario with `key=value&...` overrides applied (types follow the defaults)."""
        if not query:
            return self
        types = {f.name: type(getattr(self, f.name)) for f in fields(self)}
        changes: dict[str, Any] = {}
        for key, value in parse_qsl(query, keep_blank_values=True):
            key = "kind" if key == "scenario" else key
            if key in types:
                changes[key] = types[key](value)
        return replace(self, **changes)


def argument_pieces(arguments: str, size: int = 5) -> list[str]:
    """A tool call's arguments cut as the APIs stream them: a few characters at a time."""
    return [arguments[start : start + size] for start in range(0, len(arguments), size)] or [""]


def split_model(model: str) -> tuple[str, str]:
    """`name#k=v` -> ("name", "k=v")."""
    name, _, query = model.partition("#")
    return name, query


@dataclass(slots=True)
class Recorded:
    path: str
    headers: dict[str, str]
    json: dict[str, Any]
    scenario: Scenario = field(default_factory=Scenario)


class FakeServer:
    """The shared machinery: lifecycle, recording, scenario resolution, paced writing."""

    route: str = "/"
    models_route: str = "/v1/models"
    error_kinds: frozenset[str] = frozenset()
    default_tokens: int = Scenario().tokens  # a reply's length when no scenario says otherwise

    def __init__(
        self, scenario: Scenario | None = None, *, api_key: str | None = None, models: list[str] | None = None
    ) -> None:
        self.scenario = scenario or Scenario(tokens=self.default_tokens)
        self.api_key = api_key  # when set, any other key gets a 401
        self.models = list(models or [])  # what the model list says
        self.listings = 0
        self.requests: list[Recorded] = []
        self.disconnects = 0
        self.disconnected = asyncio.Event()
        self.port = 0
        self._runner: web.AppRunner | None = None

    # Lifecycle ---------------------------------------------------------------------------------

    async def start(self, port: int = 0) -> Self:
        app = web.Application()
        app.router.add_post(self.route, self._handle)
        app.router.add_get(self.models_route, self._list_models)
        self.add_routes(app)
        # handler_cancellation lets the fake notice a client hanging up even while it is silent;
        # a short shutdown keeps a stalled reply from holding up the end of a test.
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.port = self._runner.addresses[0][1]
        return self

    def add_routes(self, app: web.Application) -> None:
        """Routes of this server's own, beside the reply and the model list."""

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """What to give the SDK as base URL."""
        return self.origin

    @property
    def last(self) -> Recorded:
        return self.requests[-1]

    @property
    def replies(self) -> list[Recorded]:
        """The requests for replies: a conversation's first exchange also has its title asked
        (chat/titles.py, by the test session's worker), which may reach the server after it."""
        return [recorded for recorded in self.requests if not _asks_a_title(recorded)]

    @property
    def last_reply(self) -> Recorded:
        return self.replies[-1]

    # Requests ----------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError as exc:
            scenario = self.scenario.overridden(request.headers.get(SCENARIO_HEADER, ""))
            self.requests.append(Recorded(request.path, {k.lower(): v for k, v in request.headers.items()}, {}, scenario))
            return self.unreadable_body(exc, scenario)
        model, model_query = split_model(str(body.get("model", "")))
        scenario = self.scenario.overridden(model_query).overridden(request.headers.get(SCENARIO_HEADER, ""))
        self.requests.append(Recorded(request.path, {k.lower(): v for k, v in request.headers.items()}, body, scenario))
        if self.api_key is not None and not self._key_matches(request):
            return self.error_response(401, scenario)
        kind = scenario.kind
        if kind not in {"ok", "tool_call"} and scenario.times and len(self.requests) > scenario.times:
            kind = "ok"
        if kind in self.error_kinds:
            return self.error_response(self.status_for(kind, scenario), scenario)
        try:
            return await self.stream_reply(request, replace(scenario, kind=kind), model)
        except (ConnectionError, asyncio.CancelledError):
            self._note_disconnect()
            raise

    async def _list_models(self, request: web.Request) -> web.Response:
        self.listings += 1
        if self.api_key is not None and not self._key_matches(request):
            return self.error_response(401, Scenario("unauthorized"))
        return web.json_response(self.model_list(request))

    def model_list(self, request: web.Request) -> dict[str, Any]:
        raise NotImplementedError

    def _key_matches(self, request: web.Request) -> bool:
        raise NotImplementedError

    def status_for(self, kind: str, scenario: Scenario) -> int:
        return {
            "rate_limited": 429,
            "server_error": 500,
            "overloaded": 529,
            "unauthorized": 401,
            "context_length": 400,
            "bad_request": 400,
        }.get(kind, scenario.status)

    def error_response(self, status: int, scenario: Scenario) -> web.Response:
        headers = {"x-should-retry": "true"} if status >= 500 or status == 429 else {}
        if status == 429:
            headers["retry-after"] = scenario.retry_after
        if scenario.retry_after_ms:
            headers["retry-after-ms"] = scenario.retry_after_ms
        return web.Response(status=status, body=orjson.dumps(self.error_body(status, scenario)), headers=headers,
                            content_type="application/json")

    def error_body(self, status: int, scenario: Scenario) -> dict[str, Any]:
        raise NotImplementedError

    def unreadable_body(self, exc: orjson.JSONDecodeError, scenario: Scenario) -> web.Response:
        """The answer to a body that is not JSON: the API's own 400, unless a server says otherwise."""
        return self.error_response(400, replace(scenario, kind="bad_request"))

    async def stream_reply(self, request: web.Request, scenario: Scenario, model: str) -> web.StreamResponse:
        raise NotImplementedError

    def _note_disconnect(self) -> None:
        self.disconnects += 1
        self.disconnected.set()

    # Command line ------------------------------------------------------------------------------

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Options of this server's own, beyond those every fake takes (`cli`)."""

    @classmethod
    def options(cls, args: argparse.Namespace) -> dict[str, Any]:
        """Keyword arguments for the constructor from the options `add_arguments` added."""
        return {}

    # Writing -----------------------------------------------------------------------------------

    async def open_stream(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        return response

    async def send(self, response: web.StreamResponse, frames: list[bytes], scenario: Scenario) -> None:
        data = b"".join(frames)
        if scenario.fragment <= 0:
            await response.write(data)
            return
        for start in range(0, len(data), scenario.fragment):
            await response.write(data[start : start + scenario.fragment])
            await asyncio.sleep(0.001)  # let each piece leave as its own segment

    async def pace(self, scenario: Scenario) -> None:
        if scenario.rate > 0:
            await asyncio.sleep(1 / scenario.rate)

    @staticmethod
    def abort(request: web.Request) -> None:
        """Drop the connection mid-body, as a crashed upstream or a proxy reset would."""
        if request.transport is not None:
            request.transport.abort()


def _asks_a_title(recorded: Recorded) -> bool:
    from chat.titles import PROMPT

    messages = (recorded.json or {}).get("messages") or []
    content = messages[-1].get("content") if messages else None
    return isinstance(content, str) and content.startswith(PROMPT.split("{")[0])


def cli(server_class: type[FakeServer], description: str) -> None:
    """`python -m tests.fakes.<module> --port N --tokens 200 --rate 50 [--scenario KIND]`."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--tokens", type=int, default=server_class.default_tokens)
    parser.add_argument("--rate", type=float, default=0.0, help="tokens a second (0: unpaced)")
    parser.add_argument("--scenario", default="ok", help="the default scenario kind")
    parser.add_argument("--api-key", default=None, help="answer 401 to any other key")
    parser.add_argument("--models", default="", help="comma-separated ids that GET /v1/models lists")
    server_class.add_arguments(parser)
    args = parser.parse_args()

    async def serve() -> None:
        server = server_class(
            Scenario(args.scenario, tokens=args.tokens, rate=args.rate), api_key=args.api_key,
            models=[name for name in args.models.split(",") if name], **server_class.options(args),
        )
        await server.start(args.port)
        # The first line tells a parent process where to connect (useful with --port 0).
        print(f"listening on {server.base_url}", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await server.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())
