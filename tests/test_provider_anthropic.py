"""The Anthropic adapter with the real SDK against the fake Messages server."""

import asyncio
import time

import pytest

from providers.anthropic_messages import AnthropicProvider, EventReader
from providers.base import ChatRequest, ErrorCode, Finish, StreamError, TextDelta, Timeouts, Usage, collect
from tests.fakes import Scenario, expected_text
from tests.fakes.anthropic_server import AnthropicFake

# Generous, so that a loaded CI machine does not time out; the timeout tests set their own.
TIMEOUTS = Timeouts(connect=5.0, first_token=5.0, idle=5.0)


@pytest.fixture
async def server():
    async with AnthropicFake() as fake:
        yield fake


@pytest.fixture
async def provider(server):
    adapter = AnthropicProvider(TIMEOUTS, api_key="sk-ant-test", base_url=server.base_url, max_retries=0)
    yield adapter
    await adapter.aclose()


def ask(content: str = "Hello there", **overrides) -> ChatRequest:
    fields = {"model": "claude-fake-1", "messages": [{"role": "user", "content": content}]} | overrides
    return ChatRequest(**fields)


async def events_of(provider: AnthropicProvider, request: ChatRequest) -> list:
    return [event async for event in provider.stream(request)]


# A normal reply ----------------------------------------------------------------------------------


async def test_text_usage_finish_and_model_version(server, provider):
    server.scenario = Scenario(tokens=30, fragment=17)
    reply = await collect(provider, ask(system="Be brief."))
    assert reply.error is None
    assert reply.text == expected_text(30)
    # input tokens come from message_start, output tokens from message_delta
    assert reply.usage == Usage(prompt_tokens=(len("Be brief.") + len("Hello there")) // 4 + 1, completion_tokens=30)
    assert reply.finish == Finish("stop", model_version="claude-fake-1-20250929")


async def test_events_of_one_read_become_one_delta(server, provider):
    server.scenario = Scenario(tokens=60, batch=20)
    reply = await collect(provider, ask())
    assert reply.text == expected_text(60)
    assert len(reply.deltas) < 60


async def test_max_tokens_stop_reason_is_length(server, provider):
    server.scenario = Scenario(tokens=12)
    reply = await collect(provider, ask(max_output_tokens=4))
    assert reply.text == expected_text(4)
    assert reply.finish.reason == "length"


async def test_request_shape(server, provider):
    history = [
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "two"},
        {"role": "user", "content": "three"},
    ]
    await collect(provider, ask(messages=history, system="You are terse.", max_output_tokens=222))
    sent = server.last
    assert sent.path == "/v1/messages"
    # This SDK sends the key as a bearer token; older ones used x-api-key.
    assert sent.headers.get("x-api-key") == "sk-ant-test" or sent.headers["authorization"] == "Bearer sk-ant-test"
    assert sent.headers["anthropic-version"]
    assert sent.json["model"] == "claude-fake-1"
    assert sent.json["system"] == "You are terse."
    assert sent.json["messages"] == history
    assert sent.json["max_tokens"] == 222
    assert sent.json["stream"] is True


async def test_no_system_field_without_a_system_prompt(server, provider):
    await collect(provider, ask())
    assert "system" not in server.last.json


async def test_base_url_per_request_wins(server):
    async with AnthropicFake() as other:
        adapter = AnthropicProvider(TIMEOUTS, api_key="k", base_url=server.base_url, max_retries=0)
        reply = await collect(adapter, ask(base_url=other.base_url))
        await adapter.aclose()
    assert reply.error is None
    assert len(other.requests) == 1
    assert server.requests == []


# Errors ------------------------------------------------------------------------------------------


async def test_429_is_rate_limited_with_retry_after(server, provider):
    server.scenario = Scenario("rate_limited", retry_after="11")
    reply = await collect(provider, ask())
    assert reply.error.code == ErrorCode.RATE_LIMITED
    assert reply.error.retry_after == 11.0


@pytest.mark.parametrize(
    ("scenario", "code"),
    [
        (Scenario("overloaded"), ErrorCode.OVERLOADED),  # HTTP 529 overloaded_error
        (Scenario("server_error"), ErrorCode.PROVIDER_UNAVAILABLE),
        (Scenario("unauthorized"), ErrorCode.AUTH_FAILED),
        (Scenario("context_length"), ErrorCode.CONTEXT_TOO_LONG),
        (Scenario("bad_request"), ErrorCode.BAD_REQUEST),
        (Scenario("status", status=413), ErrorCode.CONTEXT_TOO_LONG),
        (Scenario("status", status=504), ErrorCode.TIMEOUT),
    ],
)
async def test_http_errors_map_to_the_taxonomy(server, provider, scenario, code):
    server.scenario = scenario
    reply = await collect(provider, ask())
    assert reply.text == ""
    assert reply.error.code == code


async def test_wrong_key_is_auth_failed(server):
    server.api_key = "sk-ant-right"
    adapter = AnthropicProvider(TIMEOUTS, api_key="sk-ant-wrong", base_url=server.base_url, max_retries=0)
    reply = await collect(adapter, ask())
    await adapter.aclose()
    assert reply.error.code == ErrorCode.AUTH_FAILED


async def test_overloaded_error_event_mid_stream(server, provider):
    server.scenario = Scenario("overloaded_in_stream", tokens=12, after=5)
    events = await events_of(provider, ask())
    assert "".join(e.text for e in events[:-1]) == expected_text(5)
    assert events[-1].code == ErrorCode.OVERLOADED
    assert events[-1].retryable


async def test_sdk_retries_a_529_before_the_first_byte(server):
    server.scenario = Scenario("overloaded", times=1, retry_after_ms="10")
    adapter = AnthropicProvider(TIMEOUTS, api_key="k", base_url=server.base_url, max_retries=1)
    reply = await collect(adapter, ask())
    await adapter.aclose()
    assert reply.error is None
    assert len(server.requests) == 2


async def test_cut_mid_stream_yields_the_partial_text_then_unavailable(server, provider):
    server.scenario = Scenario("cut", tokens=12, after=3)
    events = await events_of(provider, ask())
    assert isinstance(events[-1], StreamError)
    assert events[-1].code == ErrorCode.PROVIDER_UNAVAILABLE
    assert "".join(e.text for e in events[:-1]) == expected_text(3)


async def test_clean_end_without_message_stop_is_a_cut(server, provider):
    server.scenario = Scenario("truncate", tokens=12, after=4)
    reply = await collect(provider, ask())
    assert reply.text == expected_text(4)
    assert reply.error.code == ErrorCode.PROVIDER_UNAVAILABLE


async def test_malformed_chunk_ends_with_an_error_after_the_text_so_far(server, provider):
    server.scenario = Scenario("malformed", tokens=12, after=3)
    events = await events_of(provider, ask())
    assert "".join(e.text for e in events[:-1]) == expected_text(3)
    assert events[-1].code == ErrorCode.PROVIDER_UNAVAILABLE


async def test_pings_do_not_count_as_a_first_token(server):
    # The fake sends message_start at once, then only pings until the delay is over.
    server.scenario = Scenario("slow_first", delay=5)
    adapter = AnthropicProvider(Timeouts(5, first_token=0.5, idle=5), api_key="k", base_url=server.base_url,
                                max_retries=0)
    started = time.monotonic()
    reply = await collect(adapter, ask())
    await adapter.aclose()
    assert reply.error.code == ErrorCode.TIMEOUT
    assert time.monotonic() - started < 3  # the fake would have waited 5 s
    await asyncio.wait_for(server.disconnected.wait(), 1)


async def test_stall_with_pings_hits_the_idle_timeout(server):
    server.scenario = Scenario("stall", tokens=12, after=3, delay=5)
    adapter = AnthropicProvider(Timeouts(5, first_token=5, idle=0.5), api_key="k", base_url=server.base_url,
                                max_retries=0)
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


# The reader on its own ---------------------------------------------------------------------------


def test_reader_ignores_thinking_and_counts_cached_prompt_tokens():
    reader = EventReader()
    events = reader.feed(
        b'event: message_start\ndata: {"type": "message_start", "message": {"model": "claude-x", "usage": '
        b'{"input_tokens": 5, "cache_read_input_tokens": 100, "output_tokens": 1}}}\n\n'
        b'event: content_block_delta\ndata: {"type": "content_block_delta", "index": 0, '
        b'"delta": {"type": "thinking_delta", "thinking": "hmm"}}\n\n'
        b'event: content_block_delta\ndata: {"type": "content_block_delta", "index": 1, '
        b'"delta": {"type": "text_delta", "text": "Yes."}}\n\n'
        b'event: message_delta\ndata: {"type": "message_delta", "delta": {"stop_reason": "refusal"}, '
        b'"usage": {"output_tokens": 9}}\n\n'
        b'event: message_stop\ndata: {"type": "message_stop"}\n\n'
    )
    assert events == [TextDelta("Yes."), Usage(105, 9), Finish("content_filter", "claude-x")]
