"""Every body and stream event of POST /v1/messages validated against the `anthropic` SDK's own
types (pydantic, strictly, not the SDK's lenient construction), for a text reply and a tool call
round trip with the demo model; and `messages/count_tokens` through the SDK."""

import anthropic
import httpx
import orjson
import pytest
from anthropic.types import Message, MessageTokensCount, RawMessageStreamEvent
from pydantic import TypeAdapter

from accounts.models import ApiToken

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

DEMO = "parley-demo"
EVENT = TypeAdapter(RawMessageStreamEvent)
CALCULATE = {
    "name": "calculate", "description": "Work out arithmetic.",
    "input_schema": {"type": "object", "properties": {"expression": {"type": "string"}}},
}


@pytest.fixture
def key(alice) -> str:
    return ApiToken.issue(alice, "schema", scopes=[ApiToken.Scope.GATEWAY])[1]


def post(live_app, key: str, body: dict) -> httpx.Response:
    return httpx.post(f"{live_app.url}/v1/messages", json=body, headers={"x-api-key": key}, timeout=30)


def streamed(live_app, key: str, body: dict) -> list[tuple[str, dict]]:
    """The stream's (event name, data) pairs, pings included, as they came over the wire."""
    pairs, name = [], None
    with httpx.stream("POST", f"{live_app.url}/v1/messages", json={**body, "stream": True}, headers={"x-api-key": key}, timeout=30) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                pairs.append((name, orjson.loads(line[6:])))
    return pairs


def validated(pairs: list[tuple[str, dict]]) -> list[object]:
    out = []
    for name, data in pairs:
        assert data["type"] == name  # the `event:` line names what the data holds
        if name != "ping":
            out.append(EVENT.validate_python(data, strict=True))
    return out


def test_a_text_reply_matches_the_sdk_types(live_app, key):
    body = {"model": DEMO, "max_tokens": 100, "messages": [{"role": "user", "content": "types /words 4"}]}
    whole = Message.model_validate(post(live_app, key, body).json(), strict=True)
    assert whole.content[0].type == "text" and whole.stop_reason == "end_turn"
    pairs = streamed(live_app, key, body)
    assert [name for name, _ in pairs][:2] == ["message_start", "ping"]
    events = validated(pairs)
    assert [event.type for event in events] == [
        "message_start", "content_block_start", *["content_block_delta"] * 4, "content_block_stop", "message_delta", "message_stop",
    ]


def test_a_tool_round_trip_matches_the_sdk_types(live_app, key):
    question = {"role": "user", "content": "What is 12 * 3?"}
    body = {"model": DEMO, "max_tokens": 200, "tools": [CALCULATE], "messages": [question]}
    whole = Message.model_validate(post(live_app, key, body).json(), strict=True)
    assert whole.stop_reason == "tool_use"
    [use] = whole.content
    assert (use.type, use.name, use.input) == ("tool_use", "calculate", {"expression": "12 * 3"})

    events = validated(streamed(live_app, key, body))
    assert [event.type for event in events] == [
        "message_start", "content_block_start", "content_block_delta", "content_block_stop", "message_delta", "message_stop",
    ]
    assert events[1].content_block.type == "tool_use" and events[2].delta.type == "input_json_delta"
    assert orjson.loads(events[2].delta.partial_json) == {"expression": "12 * 3"}
    assert events[4].delta.stop_reason == "tool_use"

    # The result goes back, an error flag and all, and the model answers in words.
    client = anthropic.Anthropic(api_key=key, base_url=live_app.url, max_retries=0)
    answer = client.messages.create(model=DEMO, max_tokens=200, tools=[CALCULATE], messages=[
        question,
        {"role": "assistant", "content": whole.content},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "36"}]},
    ])
    assert answer.stop_reason == "end_turn" and "`36`" in answer.content[0].text
    failed = client.messages.create(model=DEMO, max_tokens=200, tools=[CALCULATE], messages=[
        question,
        {"role": "assistant", "content": whole.content},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "division by zero", "is_error": True}]},
    ])
    assert "`Error: division by zero`" in failed.content[0].text


def test_count_tokens_gives_parleys_estimate(live_app, key):
    client = anthropic.Anthropic(api_key=key, base_url=live_app.url, max_retries=0)
    short = client.messages.count_tokens(model=DEMO, messages=[{"role": "user", "content": "hi"}])
    long = client.messages.count_tokens(model=DEMO, system="Be brief.", messages=[{"role": "user", "content": "hello " * 400}])
    assert isinstance(short, MessageTokensCount) and 0 < short.input_tokens < long.input_tokens
    assert long.input_tokens >= 600  # 2,400 characters at about four a token
    with pytest.raises(anthropic.NotFoundError):
        client.messages.count_tokens(model="claude-nonesuch", messages=[{"role": "user", "content": "hi"}])
