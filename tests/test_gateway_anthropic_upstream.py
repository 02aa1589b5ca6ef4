"""POST /v1/messages in front of an Anthropic upstream (the fake Messages server), read by the
official async `anthropic` SDK through real daphne: what the client asks reaches the upstream
(system prompt, stop sequences, temperature, top_p, tools and tool_choice, images), a tool call
comes back as a `tool_use` block and its result goes up as a `tool_result`, and the upstream's
failures come down as Anthropic's own errors."""

import base64
from decimal import Decimal

import anthropic
import httpx2
import pytest
from asgiref.sync import sync_to_async

from accounts.models import ApiToken
from billing.models import UsageRecord
from chat.models import ChatModel, Conversation
from tests.fakes import Scenario, expected_text
from tests.fakes.anthropic_server import AnthropicFake
from tests.files import png

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

CALCULATE = {
    "name": "calculate", "description": "Work out arithmetic.",
    "input_schema": {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]},
}


@pytest.fixture
async def upstream():
    async with AnthropicFake(Scenario(tokens=12)) as fake:
        yield fake


@pytest.fixture
async def model(upstream) -> ChatModel:
    return await ChatModel.objects.acreate(
        name="claude-fake", label="Claude (fake)", provider="anthropic", base_url=upstream.base_url,
        input_price_per_million=Decimal(1), output_price_per_million=Decimal(1),
    )


@pytest.fixture
def gateway(live_factory):
    """A daphne whose Anthropic provider is configured (the session's is not), retrying quickly
    and only through Parley's own retries (not the provider SDK's as well)."""
    app = live_factory(
        ANTHROPIC_API_KEY="sk-ant-parley", PROVIDER_MAX_RETRIES="0", PARLEY_RETRY_ATTEMPTS="2",
        PARLEY_RETRY_BASE_SECONDS="0.02", PARLEY_RETRY_MAX_BACKOFF_SECONDS="0.05",
    )
    app.start_daphne()
    return app


@pytest.fixture
async def client(gateway, alice):
    raw = (await sync_to_async(ApiToken.issue)(alice, "upstream", scopes=[ApiToken.Scope.GATEWAY]))[1]
    sdk = anthropic.AsyncAnthropic(api_key=raw, base_url=gateway.url, max_retries=0)
    yield sdk
    await sdk.close()


async def test_system_stop_sequences_and_sampling_reach_the_upstream(client, model, upstream):
    message = await client.messages.create(
        model="claude-fake", max_tokens=50, system=[{"type": "text", "text": "Be terse."}],
        stop_sequences=[" naïve"], metadata={"user_id": "customer-7"}, messages=[{"role": "user", "content": "Count."}],
        # The SDK (2.x) no longer names the sampling options; clients send them as extra fields.
        extra_body={"temperature": 0.3, "top_p": 0.9, "top_k": 5},
    )
    sent = upstream.last_reply.json
    assert sent["model"] == "claude-fake" and sent["system"] == "Be terse." and sent["max_tokens"] == 50
    assert (sent["temperature"], sent["top_p"], sent["stop_sequences"]) == (0.3, 0.9, [" naïve"])
    assert "top_k" not in sent  # accepted, not passed on
    assert sent["messages"] == [{"role": "user", "content": "Count."}]
    # The upstream stopped where it would have written the sequence, and said so.
    assert message.content[0].text == expected_text(8)
    assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", " naïve")
    assert message.model == "claude-fake"


async def test_a_reply_cut_at_max_tokens_says_so(client, model):
    async with client.messages.stream(model="claude-fake", max_tokens=5, messages=[{"role": "user", "content": "Go."}]) as stream:
        final = await stream.get_final_message()
    assert final.content[0].text == expected_text(5) and final.stop_reason == "max_tokens"


async def test_a_tool_call_and_its_result_make_the_round_trip(client, model, upstream):
    upstream.scenario = Scenario("tool_call", tokens=4)
    question = {"role": "user", "content": "What is 6 * 7?"}
    called = await client.messages.create(
        model="claude-fake", max_tokens=100, tools=[CALCULATE], tool_choice={"type": "any"}, messages=[question],
    )
    sent = upstream.last_reply.json
    assert sent["tools"] == [CALCULATE] and sent["tool_choice"] == {"type": "any"}
    assert called.stop_reason == "tool_use"
    [use] = [block for block in called.content if block.type == "tool_use"]
    assert (use.id, use.name, use.input) == ("toolu_fake1", "calculate", {"expression": "6 * 7"})

    answered = await client.messages.create(
        model="claude-fake", max_tokens=100, tools=[CALCULATE], messages=[
            question,
            {"role": "assistant", "content": called.content},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": [{"type": "text", "text": "42"}]}]},
        ],
    )
    sent = upstream.last_reply.json
    assert sent["messages"][1] == {
        "role": "assistant", "content": [{"type": "tool_use", "id": "toolu_fake1", "name": "calculate", "input": {"expression": "6 * 7"}}],
    }
    assert sent["messages"][2] == {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_fake1", "content": "42"}]}
    assert answered.stop_reason == "end_turn" and answered.content[0].text == expected_text(4)


async def test_a_streamed_tool_call_is_built_by_the_sdk_accumulator(client, model, upstream):
    upstream.scenario = Scenario("tool_call", tool_arguments='{"expression": "2 + 2", "exact": true}')
    async with client.messages.stream(
        model="claude-fake", max_tokens=100, tools=[CALCULATE], tool_choice={"type": "tool", "name": "calculate"},
        messages=[{"role": "user", "content": "Add."}],
    ) as stream:
        kinds = [event.type async for event in stream]
        final = await stream.get_final_message()
    assert upstream.last_reply.json["tool_choice"] == {"type": "tool", "name": "calculate"}
    assert "input_json" in kinds and kinds[-1] == "message_stop"
    assert final.stop_reason == "tool_use"
    assert [(b.type, b.name, b.input) for b in final.content] == [("tool_use", "calculate", {"expression": "2 + 2", "exact": True})]


async def test_an_image_goes_up_as_an_image_block(client, model, upstream):
    data = base64.b64encode(png(2, 2)).decode()
    await ChatModel.objects.filter(pk=model.pk).aupdate(supports_vision=True)
    await client.messages.create(model="claude-fake", max_tokens=20, messages=[{"role": "user", "content": [
        {"type": "text", "text": "Describe."},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": data}},
    ]}])
    [turn] = upstream.last_reply.json["messages"]
    assert turn["content"][0] == {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": data}}
    assert turn["content"][-1] == {"type": "text", "text": "Describe."}


async def test_an_overloaded_upstream_is_an_overloaded_error(client, model, upstream, alice):
    upstream.scenario = Scenario("overloaded")
    with pytest.raises(anthropic.OverloadedError) as raised:
        await client.messages.create(model="claude-fake", max_tokens=20, messages=[{"role": "user", "content": "Hi"}])
    assert raised.value.status_code == 529 and raised.value.body["error"]["type"] == "overloaded_error"
    assert raised.value.body["type"] == "error" and raised.value.body["error"]["message"]
    assert len(upstream.replies) == 2  # Parley's own retries (PARLEY_RETRY_ATTEMPTS) came first


async def test_an_overload_after_the_first_token_ends_the_stream_with_an_error_event(client, model, upstream):
    upstream.scenario = Scenario("overloaded_in_stream", after=3)
    received = []
    with pytest.raises(anthropic.APIStatusError) as raised:
        async with client.messages.stream(model="claude-fake", max_tokens=20, messages=[{"role": "user", "content": "Hi"}]) as stream:
            async for text in stream.text_stream:
                received.append(text)
    assert "".join(received) == expected_text(3)
    assert raised.value.body["error"]["type"] == "overloaded_error"
    # Not streaming, the same failure is a 529: a message is whole or an error.
    with pytest.raises(anthropic.OverloadedError):
        await client.messages.create(model="claude-fake", max_tokens=20, messages=[{"role": "user", "content": "Hi"}])


async def test_an_upstream_that_refuses_parleys_key_is_not_retried(gateway, alice, model, upstream):
    upstream.api_key = "the-right-key"  # Parley sends another
    raw = (await sync_to_async(ApiToken.issue)(alice, "no-retry", scopes=[ApiToken.Scope.GATEWAY]))[1]
    statuses: list[int] = []

    async def seen(response: httpx2.Response) -> None:
        statuses.append(response.status_code)

    http = httpx2.AsyncClient(event_hooks={"response": [seen]})
    sdk = anthropic.AsyncAnthropic(api_key=raw, base_url=gateway.url, max_retries=3, http_client=http)
    with pytest.raises(anthropic.InternalServerError) as raised:
        await sdk.messages.create(model="claude-fake", max_tokens=20, messages=[{"role": "user", "content": "Hi"}])
    await sdk.close()
    assert raised.value.status_code == 500 and raised.value.body["error"]["type"] == "api_error"
    assert raised.value.response.headers["x-should-retry"] == "false"
    assert statuses == [500]  # the SDK obeyed: one request, though it may retry three times
    rows = await sync_to_async(list)(UsageRecord.objects.filter(user=alice).values_list("kind", "outcome"))
    assert rows and set(rows) == {(UsageRecord.Kind.GATEWAY, "failed")}


async def test_an_upstream_rate_limit_is_a_rate_limit_error_the_sdk_retries(gateway, alice, model, upstream):
    upstream.scenario = Scenario("rate_limited", retry_after="1")
    raw = (await sync_to_async(ApiToken.issue)(alice, "retrying", scopes=[ApiToken.Scope.GATEWAY]))[1]
    statuses: list[int] = []

    async def seen(response: httpx2.Response) -> None:
        statuses.append(response.status_code)

    http = httpx2.AsyncClient(event_hooks={"response": [seen]})
    sdk = anthropic.AsyncAnthropic(api_key=raw, base_url=gateway.url, max_retries=1, http_client=http)
    with pytest.raises(anthropic.RateLimitError) as raised:
        await sdk.messages.create(model="claude-fake", max_tokens=20, messages=[{"role": "user", "content": "Hi"}])
    await sdk.close()
    assert raised.value.body["error"]["type"] == "rate_limit_error"
    assert raised.value.response.headers["retry-after"] == "1" and "x-should-retry" not in raised.value.response.headers
    assert statuses == [429, 429]  # the SDK retried once, as it may
    assert len(upstream.replies) == 4  # each of its requests had Parley's two attempts


async def test_each_token_bills_its_own_owner(gateway, alice, bob, model, upstream):
    keys = [
        (await sync_to_async(ApiToken.issue)(person, "own", scopes=[ApiToken.Scope.GATEWAY], stores_calls=True))[1]
        for person in (alice, bob)
    ]
    for raw in keys:
        sdk = anthropic.AsyncAnthropic(api_key=raw, base_url=gateway.url, max_retries=0)
        await sdk.messages.create(model="claude-fake", max_tokens=5, messages=[{"role": "user", "content": "Mine."}])
        await sdk.close()
    rows = await sync_to_async(list)(UsageRecord.objects.values_list("user__username", "api_token__user__username", "kind"))
    assert sorted(rows) == [("alice", "alice", "gateway"), ("bob", "bob", "gateway")]
    owners = await sync_to_async(list)(Conversation.objects.values_list("owner__username", "api_token__user__username"))
    assert sorted(owners) == [("alice", "alice"), ("bob", "bob")]
