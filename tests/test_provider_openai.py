"""The OpenAI adapter with the real SDK against the fake Chat Completions server, and the shared
wire helpers it is built on."""

import asyncio
import socket
import time
from contextlib import aclosing
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import aiohttp
import pytest

from providers.base import ChatRequest, ErrorCode, Finish, StreamError, TextDelta, Timeouts, Usage, collect
from providers.openai_chat import PLACEHOLDER_KEY, ChunkReader, OpenAIProvider, max_tokens_param
from providers.sse_wire import SSEFramer, classify, retry_after_seconds
from tests.fakes import SCENARIO_HEADER, Scenario, expected_text
from tests.fakes.openai_server import OpenAIFake

# Generous, so that a loaded CI machine does not time out; the timeout tests set their own.
TIMEOUTS = Timeouts(connect=5.0, first_token=5.0, idle=5.0)


@pytest.fixture
async def server():
    async with OpenAIFake() as fake:
        yield fake


@pytest.fixture
async def provider(server):
    adapter = OpenAIProvider(TIMEOUTS, api_key="sk-test", base_url=server.base_url, max_retries=0)
    yield adapter
    await adapter.aclose()


def ask(content: str = "Hello there", **overrides) -> ChatRequest:
    fields = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}]} | overrides
    return ChatRequest(**fields)


async def events_of(provider: OpenAIProvider, request: ChatRequest) -> list:
    return [event async for event in provider.stream(request)]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# A normal reply ----------------------------------------------------------------------------------


async def test_text_reassembles_exactly_across_split_reads(server, provider):
    # 13-byte writes split lines, JSON and multi-byte characters across reads.
    server.scenario = Scenario(tokens=15, fragment=13)
    reply = await collect(provider, ask())
    assert reply.error is None
    assert reply.text == expected_text(15)
    assert reply.usage == Usage(prompt_tokens=3, completion_tokens=15)
    assert reply.finish == Finish("stop", model_version="gpt-4o-mini-2025-01-01")


async def test_events_of_one_read_become_one_delta(server, provider):
    server.scenario = Scenario(tokens=60, batch=20)
    reply = await collect(provider, ask())
    assert reply.text == expected_text(60)
    assert len(reply.deltas) < 60


async def test_usage_then_finish_end_the_stream(server, provider):
    server.scenario = Scenario(tokens=5)
    events = await events_of(provider, ask())
    assert [type(e) for e in events[-2:]] == [Usage, Finish]
    assert all(isinstance(e, TextDelta) and e.text for e in events[:-2])


async def test_length_limit_is_reported(server, provider):
    server.scenario = Scenario(tokens=12)
    reply = await collect(provider, ask(max_output_tokens=5))
    assert reply.text == expected_text(5)
    assert reply.finish.reason == "length"


async def test_request_shape(server, provider):
    await collect(provider, ask("What is 2+2?", system="Answer briefly.", max_output_tokens=321))
    sent = server.last
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == "Bearer sk-test"
    assert sent.json["model"] == "gpt-4o-mini"
    assert sent.json["messages"] == [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "What is 2+2?"},
    ]
    assert sent.json["max_tokens"] == 321
    assert "max_completion_tokens" not in sent.json
    assert sent.json["stream"] is True
    assert sent.json["stream_options"] == {"include_usage": True}


async def test_no_system_message_without_a_system_prompt(server, provider):
    history = [
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "two"},
        {"role": "user", "content": "three"},
    ]
    await collect(provider, ask(messages=history))
    assert server.last.json["messages"] == history


def test_openai_itself_gets_max_completion_tokens():
    assert max_tokens_param("https://api.openai.com/v1") == "max_completion_tokens"
    assert max_tokens_param("http://localhost:11434/v1") == "max_tokens"


async def test_base_url_per_request_wins(server):
    async with OpenAIFake() as other:
        adapter = OpenAIProvider(TIMEOUTS, api_key="sk-test", base_url=server.base_url, max_retries=0)
        reply = await collect(adapter, ask(base_url=other.base_url))
        await adapter.aclose()
    assert reply.text == expected_text(Scenario().tokens)
    assert len(other.requests) == 1
    assert server.requests == []


async def test_local_server_without_a_key_gets_a_placeholder(server):
    adapter = OpenAIProvider(TIMEOUTS, api_key="", base_url=server.base_url, max_retries=0)
    reply = await collect(adapter, ask())
    await adapter.aclose()
    assert reply.error is None
    assert server.last.headers["authorization"] == f"Bearer {PLACEHOLDER_KEY}"


async def test_scenario_can_ride_on_the_model_name(server, provider):
    reply = await collect(provider, ask(model="gpt-4o-mini#scenario=rate_limited&retry_after=3"))
    assert reply.error.code == ErrorCode.RATE_LIMITED
    assert reply.error.retry_after == 3.0
    assert server.last.scenario.kind == "rate_limited"


async def test_scenario_can_ride_on_a_header(server):
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{server.base_url}/chat/completions", json={"model": "m", "messages": []},
                                headers={SCENARIO_HEADER: "scenario=unauthorized"}) as response:
            assert response.status == 401
    assert server.last.scenario.kind == "unauthorized"


# Errors before the first byte ----------------------------------------------------------------------


async def test_429_is_rate_limited_with_retry_after(server, provider):
    server.scenario = Scenario("rate_limited", retry_after="7")
    reply = await collect(provider, ask())
    assert reply.text == ""
    assert reply.error.code == ErrorCode.RATE_LIMITED
    assert reply.error.retry_after == 7.0
    assert reply.error.retryable


async def test_429_retry_after_ms_wins(server, provider):
    server.scenario = Scenario("rate_limited", retry_after="7", retry_after_ms="250")
    reply = await collect(provider, ask())
    assert reply.error.retry_after == pytest.approx(0.25)


@pytest.mark.parametrize(
    ("scenario", "code"),
    [
        (Scenario("server_error"), ErrorCode.PROVIDER_UNAVAILABLE),
        (Scenario("status", status=502), ErrorCode.PROVIDER_UNAVAILABLE),
        (Scenario("status", status=503), ErrorCode.OVERLOADED),
        (Scenario("status", status=529), ErrorCode.OVERLOADED),
        (Scenario("status", status=504), ErrorCode.TIMEOUT),
        (Scenario("unauthorized"), ErrorCode.AUTH_FAILED),
        (Scenario("status", status=403), ErrorCode.AUTH_FAILED),
        (Scenario("context_length"), ErrorCode.CONTEXT_TOO_LONG),
        (Scenario("bad_request"), ErrorCode.BAD_REQUEST),
        (Scenario("status", status=404), ErrorCode.BAD_REQUEST),
        (Scenario("status", status=422), ErrorCode.BAD_REQUEST),
    ],
)
async def test_http_errors_map_to_the_taxonomy(server, provider, scenario, code):
    server.scenario = scenario
    reply = await collect(provider, ask())
    assert reply.text == ""
    assert reply.error is not None
    assert reply.error.code == code
    assert reply.finish is None


async def test_wrong_key_is_auth_failed(server):
    server.api_key = "sk-right"
    adapter = OpenAIProvider(TIMEOUTS, api_key="sk-wrong", base_url=server.base_url, max_retries=0)
    reply = await collect(adapter, ask())
    await adapter.aclose()
    assert reply.error.code == ErrorCode.AUTH_FAILED


async def test_sdk_retries_before_the_first_byte(server):
    server.scenario = Scenario("server_error", times=1, retry_after_ms="10")
    adapter = OpenAIProvider(TIMEOUTS, api_key="sk-test", base_url=server.base_url, max_retries=1)
    reply = await collect(adapter, ask())
    await adapter.aclose()
    assert reply.error is None
    assert reply.text == expected_text(Scenario().tokens)
    assert len(server.requests) == 2


async def test_connection_refused_is_provider_unavailable():
    adapter = OpenAIProvider(TIMEOUTS, api_key="sk-test", base_url=f"http://127.0.0.1:{closed_port()}/v1", max_retries=0)
    reply = await collect(adapter, ask())
    await adapter.aclose()
    assert reply.error.code == ErrorCode.PROVIDER_UNAVAILABLE


# Failures mid-stream -------------------------------------------------------------------------------


async def test_cut_mid_stream_yields_the_partial_text_then_unavailable(server, provider):
    server.scenario = Scenario("cut", tokens=12, after=3)
    events = await events_of(provider, ask())
    assert isinstance(events[-1], StreamError)
    assert events[-1].code == ErrorCode.PROVIDER_UNAVAILABLE
    assert "".join(e.text for e in events[:-1]) == expected_text(3)


async def test_clean_end_without_done_is_a_cut(server, provider):
    server.scenario = Scenario("truncate", tokens=12, after=4)
    reply = await collect(provider, ask())
    assert reply.text == expected_text(4)
    assert reply.error.code == ErrorCode.PROVIDER_UNAVAILABLE


async def test_malformed_chunk_ends_with_an_error_after_the_text_so_far(server, provider):
    server.scenario = Scenario("malformed", tokens=12, after=3)
    events = await events_of(provider, ask())
    assert "".join(e.text for e in events[:-1]) == expected_text(3)
    assert events[-1].code == ErrorCode.PROVIDER_UNAVAILABLE
    assert "Malformed" in events[-1].message


async def test_slow_first_token_times_out(server):
    server.scenario = Scenario("slow_first", delay=5)
    adapter = OpenAIProvider(Timeouts(5, first_token=0.3, idle=5), api_key="k", base_url=server.base_url, max_retries=0)
    started = time.monotonic()
    reply = await collect(adapter, ask())
    await adapter.aclose()
    assert reply.error.code == ErrorCode.TIMEOUT
    assert reply.text == ""
    assert time.monotonic() - started < 3  # the fake would have waited 5 s
    await asyncio.wait_for(server.disconnected.wait(), 1)


async def test_stall_mid_stream_hits_the_idle_timeout(server):
    server.scenario = Scenario("stall", tokens=12, after=3, delay=5)
    adapter = OpenAIProvider(Timeouts(5, first_token=5, idle=0.3), api_key="k", base_url=server.base_url, max_retries=0)
    reply = await collect(adapter, ask())
    await adapter.aclose()
    assert reply.text == expected_text(3)
    assert reply.error.code == ErrorCode.TIMEOUT
    await asyncio.wait_for(server.disconnected.wait(), 1)


async def test_cancelling_the_consumer_closes_the_upstream_connection(server, provider):
    server.scenario = Scenario(tokens=500, rate=50)
    got_text = asyncio.Event()

    async def consume() -> None:
        async for event in provider.stream(ask()):
            if isinstance(event, TextDelta):
                got_text.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(got_text.wait(), 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(server.disconnected.wait(), 1)


async def test_closing_the_stream_early_closes_the_upstream_connection(server, provider):
    server.scenario = Scenario(tokens=500, rate=50)
    async with aclosing(provider.stream(ask())) as events:
        async for event in events:
            assert isinstance(event, TextDelta)
            break
    await asyncio.wait_for(server.disconnected.wait(), 1)


# The wire helpers --------------------------------------------------------------------------------


def test_framer_survives_any_split():
    wire = (
        b'data: {"a": "h\xc3\xa9"}\n\n'
        b": keep-alive comment\n\n"
        b"event: message_delta\r\ndata: {\"b\": 1}\r\n\r\n"
        b"data: line one\ndata: line two\n\n"
        b"data: [DONE]\n\n"
    )
    expected = [(b"", b'{"a": "h\xc3\xa9"}'), (b"message_delta", b'{"b": 1}'), (b"", b"line one\nline two"),
                (b"", b"[DONE]")]
    for size in (1, 2, 3, 5, 8, 13, len(wire)):
        framer = SSEFramer()
        events = [event for start in range(0, len(wire), size) for event in framer.feed(wire[start : start + size])]
        assert events == expected, size


def test_reader_reports_an_in_stream_error_after_the_text():
    reader = ChunkReader()
    events = reader.feed(
        b'data: {"model": "m", "choices": [{"delta": {"content": "Hi"}}]}\n\n'
        b'data: {"error": {"message": "boom", "type": "server_error", "code": 500}}\n\n'
    )
    assert events[0] == TextDelta("Hi")
    assert events[1].code == ErrorCode.PROVIDER_UNAVAILABLE
    assert reader.ended


def test_reader_yields_the_text_of_a_read_before_its_malformed_chunk():
    reader = ChunkReader()
    events = reader.feed(
        b'data: {"model": "m", "choices": [{"delta": {"content": "Hi"}}]}\n\n'
        b'data: {"model": "m", "choices": [{"delta": \n\n'
    )
    assert events[0] == TextDelta("Hi")
    assert events[1].code == ErrorCode.PROVIDER_UNAVAILABLE
    assert reader.ended


def test_reader_ends_on_done_with_usage_and_finish():
    reader = ChunkReader()
    events = reader.feed(
        b'data: {"model": "m-1", "choices": [{"delta": {"content": "Hi"}, "finish_reason": "stop"}]}\n\n'
        b'data: {"model": "m-1", "choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 1}}\n\n'
        b"data: [DONE]\n\n"
    )
    assert events == [TextDelta("Hi"), Usage(4, 1), Finish("stop", "m-1")]


def test_retry_after_forms():
    assert retry_after_seconds({"retry-after": "12"}) == 12.0
    assert retry_after_seconds({"retry-after-ms": "1500", "retry-after": "12"}) == 1.5
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 <= retry_after_seconds({"retry-after": later}) <= 30
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({}) is None


def test_classify_by_body_when_the_status_is_not_enough():
    assert classify(500, "overloaded_error") == ErrorCode.OVERLOADED
    assert classify(None, "overloaded_error") == ErrorCode.OVERLOADED
    assert classify(400, message="prompt is too long: 9 tokens > 8 maximum") == ErrorCode.CONTEXT_TOO_LONG
    assert classify(400, code="context_length_exceeded") == ErrorCode.CONTEXT_TOO_LONG
    assert classify(413) == ErrorCode.CONTEXT_TOO_LONG
    assert classify(408) == ErrorCode.TIMEOUT
    assert classify(418) == ErrorCode.BAD_REQUEST
    assert classify(None, "api_error") == ErrorCode.PROVIDER_UNAVAILABLE
