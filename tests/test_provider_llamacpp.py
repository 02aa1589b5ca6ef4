"""llama.cpp's server (and the OpenAI-compatible servers like it) through the real OpenAI adapter:
the fake llama-server in tests/fakes/llamacpp_server.py speaks its wire format, quirks included."""

import asyncio
import time
from contextlib import aclosing

import aiohttp
import orjson
import pytest

from providers.base import ChatRequest, ErrorCode, Finish, StreamError, TextDelta, Timeouts, Usage, collect
from providers.endpoints import Endpoint
from providers.listing import list_models
from providers.openai_chat import ChunkReader, OpenAIProvider, request_params
from providers.sse_wire import SSEFramer, classify, error_from_status
from tests.fakes import Scenario, expected_text
from tests.fakes.llamacpp_server import BUILD, CONTEXT_MESSAGE, FOREVER, LlamaCppFake

TIMEOUTS = Timeouts(connect=5.0, first_token=5.0, idle=5.0)


@pytest.fixture
async def server():
    async with LlamaCppFake() as fake:
        yield fake


@pytest.fixture
async def provider(server):
    # As Parley runs against a local server: no key, and no retries of the SDK's own.
    adapter = OpenAIProvider(TIMEOUTS, api_key="", base_url=server.base_url, max_retries=0)
    yield adapter
    await adapter.aclose()


def ask(content: str = "Hello there", **overrides) -> ChatRequest:
    fields = {"model": "qwen2.5-3b-instruct", "messages": [{"role": "user", "content": content}],
              "max_output_tokens": 200} | overrides
    return ChatRequest(**fields)


async def events_of(provider: OpenAIProvider, request: ChatRequest) -> list:
    return [event async for event in provider.stream(request)]


async def post_raw(server: LlamaCppFake, body: bytes) -> aiohttp.ClientResponse:
    async with aiohttp.ClientSession() as session:
        response = await session.post(f"{server.base_url}/chat/completions", data=body,
                                      headers={"Content-Type": "application/json"})
        await response.read()
        return response


# A reply -----------------------------------------------------------------------------------------


async def test_a_reply_comes_through_llamacpps_chunks_exactly(server, provider):
    # Role chunk with null content, system_fingerprint, timings on the last chunk, 13-byte reads.
    server.scenario = Scenario(tokens=15, fragment=13)
    events = await events_of(provider, ask())
    assert "".join(event.text for event in events if isinstance(event, TextDelta)) == expected_text(15)
    assert events[-2:] == [Usage(None, None), Finish("stop", "qwen2.5-3b-instruct")]
    assert not any(isinstance(event, StreamError) for event in events)


async def test_without_include_usage_support_the_reply_has_no_token_counts(server, provider):
    server.scenario = Scenario(tokens=5)
    reply = await collect(provider, ask())
    assert server.last.json["stream_options"] == {"include_usage": True}  # asked for, and ignored
    assert reply.usage == Usage(None, None)


async def test_a_build_that_honours_include_usage_gives_the_counts():
    async with LlamaCppFake(Scenario(tokens=7), include_usage=True) as fake:
        adapter = OpenAIProvider(TIMEOUTS, api_key="", base_url=fake.base_url, max_retries=0)
        reply = await collect(adapter, ask())
        await adapter.aclose()
    assert reply.text == expected_text(7)
    assert reply.usage.completion_tokens == 7 and reply.usage.prompt_tokens > 0


def test_llamacpps_own_fields_do_not_disturb_the_reader():
    wire = (
        b'data: {"choices":[{"finish_reason":null,"index":0,"delta":{"role":"assistant","content":null}}],'
        b'"created":1,"id":"chatcmpl-x","model":"m","system_fingerprint":"' + BUILD.encode() + b'",'
        b'"object":"chat.completion.chunk"}\n\n'
        b'data: {"choices":[{"finish_reason":null,"index":0,"delta":{"reasoning_content":"Let me see."}}],'
        b'"created":1,"id":"chatcmpl-x","model":"m","object":"chat.completion.chunk"}\n\n'
        b'data: {"choices":[{"finish_reason":null,"index":0,"delta":{"content":"Hi"}}],'
        b'"created":1,"id":"chatcmpl-x","model":"m","object":"chat.completion.chunk"}\n\n'
        b'data: {"choices":[{"finish_reason":"stop","index":0,"delta":{}}],"created":1,"id":"chatcmpl-x",'
        b'"model":"m","object":"chat.completion.chunk","timings":{"prompt_n":9,"predicted_n":3}}\n\n'
        b"data: [DONE]\n\n"
    )
    events = ChunkReader().feed(wire)
    assert [type(event).__name__ for event in events] == ["TextDelta", "Usage", "Finish"]
    assert events == [TextDelta("Hi"), Usage(None, None), Finish("stop", "m")]


# max_tokens --------------------------------------------------------------------------------------


async def test_every_request_carries_max_tokens_and_the_server_stops_there(server, provider):
    # The fake, like llama-server without a limit, would write forever.
    reply = await collect(provider, ask(max_output_tokens=20))
    sent = server.last.json
    assert sent["max_tokens"] == 20 and "max_completion_tokens" not in sent
    assert reply.text == expected_text(20) and reply.finish.reason == "length"
    assert [(g.requested, g.produced, g.stopped_early) for g in server.generations] == [(20, 20, False)]


@pytest.mark.parametrize(
    "base_url",
    ["http://127.0.0.1:8080/v1", "http://localhost:11434/v1", "http://gpu-box:8000/v1", "https://api.openai.com.example.net/v1"],
)
def test_compatible_servers_get_max_tokens(base_url):
    params = request_params(ask(max_output_tokens=77), base_url)
    assert params["max_tokens"] == 77 and "max_completion_tokens" not in params


def test_only_openai_itself_gets_max_completion_tokens():
    params = request_params(ask(max_output_tokens=77), "https://api.openai.com/v1")
    assert params["max_completion_tokens"] == 77 and "max_tokens" not in params


async def test_without_max_tokens_llamacpp_writes_until_the_client_hangs_up(server):
    server.scenario = Scenario(tokens=FOREVER, rate=400)
    body = {"model": "m", "messages": [{"role": "user", "content": "Hi"}], "stream": True}
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{server.base_url}/chat/completions", json=body) as response:
            seen = 0
            async for line in response.content:
                seen += line.startswith(b"data: ")
                if seen == 150:
                    break  # and hang up
    await asyncio.wait_for(server.generation_stopped.wait(), 2)
    generation = server.generations[-1]
    assert generation.requested is None and generation.stopped_early and generation.produced >= 149


# Errors ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scenario", "code", "retryable"),
    [
        (Scenario("parse_error"), ErrorCode.BAD_REQUEST, False),  # 500 with json.exception.parse_error
        (Scenario("context_length"), ErrorCode.CONTEXT_TOO_LONG, False),  # 400 exceed_context_size_error
        (Scenario("loading"), ErrorCode.OVERLOADED, True),  # 503 unavailable_error "Loading model"
        (Scenario("server_error"), ErrorCode.PROVIDER_UNAVAILABLE, True),  # 500 "Compute error."
        (Scenario("status", status=502), ErrorCode.PROVIDER_UNAVAILABLE, True),  # a proxy's HTML page
        (Scenario("unauthorized"), ErrorCode.AUTH_FAILED, False),
    ],
)
async def test_each_llamacpp_error_maps_to_its_code(server, provider, scenario, code, retryable):
    server.scenario = scenario
    reply = await collect(provider, ask())
    assert reply.text == "" and reply.finish is None
    assert (reply.error.code, reply.error.retryable) == (code, retryable)


async def test_an_unparseable_body_gets_llamacpps_500(server):
    response = await post_raw(server, b'{"model": "m", "messages": [}')
    body = orjson.loads(await response.read())
    assert response.status == 500
    assert list(body["error"]) == ["code", "message", "type"]
    assert body["error"]["code"] == 500 and body["error"]["type"] == "server_error"
    assert body["error"]["message"].startswith("[json.exception.parse_error.101] parse error at line 1, column 29")
    error = error_from_status(response.status, response.headers, body)
    assert error.code == ErrorCode.BAD_REQUEST and not error.retryable


async def test_a_prompt_beyond_the_context_is_refused_before_any_generation():
    async with LlamaCppFake(n_ctx=64) as fake:
        adapter = OpenAIProvider(TIMEOUTS, api_key="", base_url=fake.base_url, max_retries=0)
        reply = await collect(adapter, ask("word " * 100))
        await adapter.aclose()
        response = await post_raw(fake, orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "x" * 400}],
                                                      "stream": True}))
        error = orjson.loads(await response.read())["error"]
    assert (reply.error.code, reply.error.retryable) == (ErrorCode.CONTEXT_TOO_LONG, False)
    assert response.status == 400
    assert error == {"code": 400, "message": CONTEXT_MESSAGE, "type": "exceed_context_size_error",
                     "n_prompt_tokens": 107, "n_ctx": 64}
    assert fake.generations == []


async def test_an_error_mid_reply_ends_it_after_the_text_so_far(server, provider):
    server.scenario = Scenario("error_in_stream", tokens=12, after=4)
    reply = await collect(provider, ask())
    assert reply.text == expected_text(4)
    assert (reply.error.code, reply.error.retryable) == (ErrorCode.PROVIDER_UNAVAILABLE, True)


async def test_an_older_builds_error_line_is_an_error_not_an_empty_reply():
    # 200 at once, then `error: {...}` and `data: [DONE]`: dropping the line would "complete" an empty reply.
    async with LlamaCppFake(n_ctx=64, legacy_errors=True) as fake:
        adapter = OpenAIProvider(TIMEOUTS, api_key="", base_url=fake.base_url, max_retries=0)
        too_long = await collect(adapter, ask("word " * 100))
        fake.scenario = Scenario("error_in_stream", tokens=12, after=2)
        failed_midway = await collect(adapter, ask())
        await adapter.aclose()
    assert too_long.text == "" and too_long.finish is None
    assert too_long.error.code == ErrorCode.CONTEXT_TOO_LONG
    assert failed_midway.text == expected_text(2) and failed_midway.error.code == ErrorCode.PROVIDER_UNAVAILABLE


async def test_a_loading_server_is_overloaded_until_its_model_is_ready(server, provider):
    server.loading = True
    loading = await collect(provider, ask())
    async with aiohttp.ClientSession() as session, session.get(f"{server.base_url}/models") as listing:
        assert listing.status == 503
        assert (await listing.json())["error"] == {"code": 503, "message": "Loading model", "type": "unavailable_error"}
    server.loading = False
    server.scenario = Scenario(tokens=3)
    ready = await collect(provider, ask())
    assert loading.error.code == ErrorCode.OVERLOADED and loading.error.retryable
    assert ready.error is None and ready.text == expected_text(3)


@pytest.mark.parametrize(
    ("status", "error_type", "message", "code"),
    [
        (500, "server_error", "[json.exception.parse_error.101] parse error at line 1, column 1", ErrorCode.BAD_REQUEST),
        (500, "server_error", "Failed to parse messages: Missing 'content'", ErrorCode.BAD_REQUEST),
        (500, "server_error", "Failed to parse input at pos 12: <tool_call>", ErrorCode.BAD_REQUEST),
        (500, "invalid_request_error", "Invalid request.", ErrorCode.BAD_REQUEST),
        (None, "server_error", "Failed to parse input at pos 3", ErrorCode.BAD_REQUEST),
        (500, "server_error", "Compute error.", ErrorCode.PROVIDER_UNAVAILABLE),
        (500, "", "", ErrorCode.PROVIDER_UNAVAILABLE),
        (502, "", "<html>502 Bad Gateway</html>", ErrorCode.PROVIDER_UNAVAILABLE),
        (400, "exceed_context_size_error", CONTEXT_MESSAGE, ErrorCode.CONTEXT_TOO_LONG),
        (400, "exceed_context_size_error",
         "request (9000 tokens) exceeds the available context size (8192 tokens), try increasing it", ErrorCode.CONTEXT_TOO_LONG),
        (400, "invalid_request_error",
         "the request exceeds the available context size. try increasing the context size or enable context shift",
         ErrorCode.CONTEXT_TOO_LONG),
        (503, "unavailable_error", "Loading model", ErrorCode.OVERLOADED),
        (500, "unavailable_error", "Loading model", ErrorCode.OVERLOADED),
    ],
)
def test_classify_reads_llamacpps_errors(status, error_type, message, code):
    assert classify(status, error_type, "", message) == code


def test_the_framer_reads_llamacpps_old_error_line():
    framer = SSEFramer()
    wire = b'error: {"code":500,"message":"boom","type":"server_error"}\n\ndata: [DONE]\n\n'
    assert framer.feed(wire) == [(b"error", b'{"code":500,"message":"boom","type":"server_error"}'), (b"", b"[DONE]")]


# Hanging up --------------------------------------------------------------------------------------


async def test_cancelling_a_reply_stops_llamacpps_generation_at_once(server, provider):
    server.scenario = Scenario(tokens=FOREVER, rate=100)  # it would write all 5,000 tokens, at 100 a second
    deltas = 0
    five = asyncio.Event()

    async def consume() -> None:
        nonlocal deltas
        async for event in provider.stream(ask(max_output_tokens=5000)):
            deltas += isinstance(event, TextDelta)
            if deltas == 5:
                five.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(five.wait(), 2)
    task.cancel()
    cancelled_at = time.monotonic()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(server.generation_stopped.wait(), 1)
    generation = server.generations[-1]
    assert generation.stopped_early and generation.ended - cancelled_at < 0.5
    assert generation.requested == 5000 and generation.produced < 50


async def test_leaving_the_stream_stops_llamacpps_generation_at_once(server, provider):
    server.scenario = Scenario(tokens=FOREVER, rate=100)
    async with aclosing(provider.stream(ask(max_output_tokens=5000))) as events:
        async for event in events:
            assert isinstance(event, TextDelta)
            break
    left_at = time.monotonic()
    await asyncio.wait_for(server.generation_stopped.wait(), 1)
    generation = server.generations[-1]
    assert generation.ended - left_at < 0.5 and generation.produced < 50
    assert server.stopped_early == 1


async def test_breaking_out_without_closing_still_stops_it_soon(server, provider):
    # The loop's finalizer closes an abandoned stream once nothing refers to it.
    server.scenario = Scenario(tokens=FOREVER, rate=100)
    async for event in provider.stream(ask(max_output_tokens=5000)):
        assert isinstance(event, TextDelta)
        break
    await asyncio.wait_for(server.generation_stopped.wait(), 1)
    assert server.generations[-1].produced < 50


async def test_cancelling_while_the_prompt_is_processed_stops_it_too(server, provider):
    # llama.cpp sends its headers with the first token: here the hang-up comes before them.
    server.scenario = Scenario("slow_first", delay=5)
    task = asyncio.create_task(collect(provider, ask()))
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(server.generation_stopped.wait(), 1)
    assert server.generations[-1].produced == 0


# Reasoning models --------------------------------------------------------------------------------


async def test_thinking_is_not_the_reply_but_counts_as_output(server, provider):
    server.scenario = Scenario(tokens=5, reasoning=4)
    reply = await collect(provider, ask())
    assert reply.text == expected_text(5) and reply.finish.reason == "stop"
    server.scenario = Scenario(tokens=5, reasoning=4)
    capped = await collect(provider, ask(max_output_tokens=6))
    assert capped.text == expected_text(2) and capped.finish.reason == "length"


async def test_a_long_think_is_not_taken_for_silence(server):
    # 1.5 s of thinking, a token every 50 ms, under a 0.5 s first-token limit.
    server.scenario = Scenario(tokens=3, reasoning=30, rate=20)
    adapter = OpenAIProvider(Timeouts(5, first_token=0.5, idle=0.5), api_key="", base_url=server.base_url, max_retries=0)
    reply = await collect(adapter, ask())
    await adapter.aclose()
    assert reply.error is None and reply.text == expected_text(3)


async def test_a_server_that_thinks_past_the_limit_is_cut(server, provider):
    server.scenario = Scenario(tokens=5, reasoning=100, ignore_max_tokens=1, rate=200)
    reply = await collect(provider, ask(max_output_tokens=10))
    assert reply.text == "" and reply.finish == Finish("length")
    await asyncio.wait_for(server.disconnected.wait(), 1)


# The model list ----------------------------------------------------------------------------------


async def test_the_model_list_gives_the_context_the_server_runs_not_the_trained_one():
    async with LlamaCppFake(models=["qwen2.5-3b-instruct-q4_k_m.gguf"], n_ctx=8192, n_ctx_train=32768, api_key="sk-x") as fake:
        # The list is public: no key needed, even with --api-key.
        listed = await asyncio.to_thread(list_models, Endpoint("local", "openai", fake.base_url))
    assert [(model.id, model.context_window) for model in listed] == [("qwen2.5-3b-instruct-q4_k_m.gguf", 8192)]
