"""POST /v1/messages through real daphne, read by the official `anthropic` SDK (sync and async): a
message whole and streamed through the demo model, the stream's events as the SDK's own types
parse them, its keep-alive pings, the ledger row of a gateway call, and what is kept of the call."""

import asyncio
import base64
import time

import anthropic
import httpx
import orjson
import pytest
from anthropic.types import (
    RawContentBlockDeltaEvent,
    RawContentBlockStartEvent,
    RawContentBlockStopEvent,
    RawMessageDeltaEvent,
    RawMessageStartEvent,
    RawMessageStopEvent,
)

from accounts.models import ApiToken
from billing.models import UsageRecord
from chat.models import Conversation, Message
from tests.files import png

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

DEMO = "parley-demo"


@pytest.fixture
def key(alice) -> str:
    return ApiToken.issue(alice, "sdk", scopes=[ApiToken.Scope.GATEWAY])[1]


def client_for(live_app, key: str, **options) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key=key, base_url=live_app.url, max_retries=0, **options)


def test_a_whole_message_from_the_demo_model(live_app, key, alice):
    message = client_for(live_app, key).messages.create(
        model=DEMO, max_tokens=200, messages=[{"role": "user", "content": "Say hello /words 5"}],
    )
    assert message.type == "message" and message.role == "assistant" and message.id.startswith("msg_")
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text.split() == ["word1", "word2", "word3", "word4", "word5"]
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    row = UsageRecord.objects.get(user=alice)
    assert (row.kind, row.outcome, row.model) == (UsageRecord.Kind.GATEWAY, "complete", DEMO)
    assert row.api_token is not None and row.api_token.prefix == key[:10]
    assert (row.prompt_tokens, row.completion_tokens) == (message.usage.input_tokens, message.usage.output_tokens)


def test_a_streamed_message_read_by_the_sdk_accumulator(live_app, key):
    client = client_for(live_app, key)
    with client.messages.stream(
        model=DEMO, max_tokens=200, messages=[{"role": "user", "content": "Stream it /words 40"}],
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text.split() == [f"word{i}" for i in range(1, 41)]
    assert [block.type for block in final.content] == ["text"] and final.content[0].text == text
    assert final.stop_reason == "end_turn" and final.id.startswith("msg_")
    assert final.usage.input_tokens > 0 and final.usage.output_tokens >= 40  # from message_delta
    whole = client.messages.create(model=DEMO, max_tokens=200, messages=[{"role": "user", "content": "Stream it /words 40"}])
    assert whole.content[0].text == text  # one reply, whichever way it is read


def test_the_stream_events_are_the_sdks_own_types_in_order(live_app, key):
    client = client_for(live_app, key)
    stream = client.messages.create(
        model=DEMO, max_tokens=200, stream=True, messages=[{"role": "user", "content": "Events /words 6"}],
    )
    seen = list(stream)
    assert isinstance(seen[0], RawMessageStartEvent) and seen[0].message.content == []
    assert isinstance(seen[1], RawContentBlockStartEvent) and seen[1].content_block.type == "text"
    deltas = seen[2:-3]
    assert deltas and all(isinstance(e, RawContentBlockDeltaEvent) and e.delta.type == "text_delta" for e in deltas)
    assert isinstance(seen[-3], RawContentBlockStopEvent) and seen[-3].index == 0
    assert isinstance(seen[-2], RawMessageDeltaEvent) and seen[-2].delta.stop_reason == "end_turn"
    assert isinstance(seen[-1], RawMessageStopEvent)
    assert "".join(e.delta.text for e in deltas).split() == [f"word{i}" for i in range(1, 7)]


def test_pings_keep_a_silent_stream_alive(live_factory, alice):
    app = live_factory(PARLEY_SSE_KEEPALIVE_SECONDS="0.2")
    app.start_daphne()
    raw = ApiToken.issue(alice, "pings", scopes=[ApiToken.Scope.GATEWAY])[1]
    body = {"model": DEMO, "max_tokens": 100, "stream": True, "messages": [{"role": "user", "content": "slow /words 3 /slow 700"}]}
    with httpx.stream("POST", f"{app.url}/v1/messages", json=body, headers={"x-api-key": raw}, timeout=30) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        names = [line.removeprefix("event: ") for line in response.iter_lines() if line.startswith("event: ")]
    assert names[0] == "message_start" and names[-1] == "message_stop"
    deltas = [i for i, name in enumerate(names) if name == "content_block_delta"]
    # Between two words 0.7 s apart, pings at 0.2 s: a proxy sees traffic while the model is silent.
    assert "ping" in names[deltas[0]:deltas[-1]]
    # The SDK reads the same stream, pings and all.
    client = anthropic.Anthropic(api_key=raw, base_url=app.url, max_retries=0)
    with client.messages.stream(model=DEMO, max_tokens=100, messages=body["messages"]) as stream:
        assert "".join(stream.text_stream).split() == ["word1", "word2", "word3"]


def test_the_async_client_streams_and_takes_whole_messages(live_app, key):
    async def run() -> tuple[str, str, str]:
        client = anthropic.AsyncAnthropic(api_key=key, base_url=live_app.url, max_retries=0)
        async with client.messages.stream(
            model=DEMO, max_tokens=100, system="Be brief.", messages=[{"role": "user", "content": "async /words 8"}],
        ) as stream:
            text = "".join([piece async for piece in stream.text_stream])
            final = await stream.get_final_message()
        whole = await client.messages.create(model=DEMO, max_tokens=100, messages=[{"role": "user", "content": "async /words 3"}])
        await client.close()
        return text, final.content[0].text, whole.content[0].text

    streamed, accumulated, whole = asyncio.run(run())
    assert streamed == accumulated and streamed.split() == [f"word{i}" for i in range(1, 9)]
    assert whole.split() == ["word1", "word2", "word3"]


def test_x_api_key_and_bearer_both_authenticate(live_app, key):
    body = {"model": DEMO, "max_tokens": 50, "messages": [{"role": "user", "content": "hi /words 2"}]}
    for headers in ({"x-api-key": key}, {"Authorization": f"Bearer {key}"}):
        response = httpx.post(f"{live_app.url}/v1/messages", json=body, headers=headers, timeout=30)
        assert response.status_code == 200, response.text
        assert response.json()["content"][0]["text"].split() == ["word1", "word2"]
    client = anthropic.Anthropic(auth_token=key, base_url=live_app.url, max_retries=0)  # the SDK's Bearer form
    assert client.messages.create(**body).content[0].text.split() == ["word1", "word2"]


def test_an_image_block_reaches_the_model(live_app, key):
    image = base64.b64encode(png(4, 3)).decode()
    message = client_for(live_app, key).messages.create(
        model=DEMO, max_tokens=200,
        messages=[{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": image}},
            {"type": "text", "text": "What is this?"},
        ]}],
    )
    assert "4×3" in message.content[0].text or "4x3" in message.content[0].text, message.content[0].text


def test_a_call_is_discarded_unless_the_token_stores_calls(live_app, alice):
    discarding = ApiToken.issue(alice, "discard", scopes=[ApiToken.Scope.GATEWAY])[1]
    storing = ApiToken.issue(alice, "store", scopes=[ApiToken.Scope.GATEWAY], stores_calls=True)[1]
    history = [
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": "second question /words 2"},
    ]
    client_for(live_app, discarding).messages.create(model=DEMO, max_tokens=50, messages=history)
    kept = client_for(live_app, storing).messages.create(model=DEMO, max_tokens=50, system="Be kind.", messages=history)
    conversations = list(Conversation.objects.filter(owner=alice))
    assert len(conversations) == 1 and conversations[0].system_prompt == "Be kind."
    turns = list(Message.objects.filter(conversation=conversations[0]).order_by("pk").values_list("role", "content"))
    assert turns == [
        ("user", "first question"), ("assistant", "first answer"), ("user", "second question /words 2"),
        ("assistant", kept.content[0].text),
    ]
    # Both calls are billed, each to its own token.
    assert sorted(UsageRecord.objects.filter(user=alice).values_list("api_token__name", flat=True)) == ["discard", "store"]


def test_a_client_that_goes_away_stops_its_reply(live_app, alice):
    raw = ApiToken.issue(alice, "leaver", scopes=[ApiToken.Scope.GATEWAY], stores_calls=True)[1]
    body = {"model": DEMO, "max_tokens": 500, "stream": True,
            "messages": [{"role": "user", "content": "long /words 400 /slow 50"}]}
    with httpx.stream("POST", f"{live_app.url}/v1/messages", json=body, headers={"x-api-key": raw}, timeout=30) as response:
        reply_id = int(response.headers["x-parley-message-id"])
        for line in response.iter_lines():
            if line.startswith("data: ") and orjson.loads(line[6:])["type"] == "content_block_delta":
                break
    for _ in range(100):
        reply = Message.objects.get(pk=reply_id)
        if reply.status not in (Message.Status.QUEUED, Message.Status.STREAMING):
            break
        time.sleep(0.1)
    assert reply.status == Message.Status.STOPPED
    assert len(reply.content.split()) < 400
    assert UsageRecord.objects.get(message_id=reply_id).outcome == "stopped"
