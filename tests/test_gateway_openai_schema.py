"""Every body and chunk of POST /v1/chat/completions validated against the `openai` SDK's own
types (pydantic, strictly, not the SDK's lenient construction), for a text reply, a reply with
its usage chunk and a tool call round trip with the demo model; and the model list."""

import httpx
import orjson
import pytest
from openai.types import Model
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from accounts.models import ApiToken

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

DEMO = "parley-demo"
CALCULATE = {
    "type": "function",
    "function": {
        "name": "calculate", "description": "Work out arithmetic.",
        "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}},
    },
}


@pytest.fixture
def key(alice) -> str:
    return ApiToken.issue(alice, "schema", scopes=[ApiToken.Scope.GATEWAY])[1]


def post(live_app, key: str, body: dict) -> httpx.Response:
    return httpx.post(f"{live_app.url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def chunks(live_app, key: str, body: dict) -> list[ChatCompletionChunk]:
    """The stream's chunks, each validated strictly, and its `[DONE]` last."""
    out, ended = [], False
    with httpx.stream(
        "POST", f"{live_app.url}/v1/chat/completions", json={**body, "stream": True},
        headers={"Authorization": f"Bearer {key}"}, timeout=30,
    ) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if not line.startswith("data: "):
                assert line == "", line  # nothing but data lines and their blank separators
                continue
            assert not ended, "data after [DONE]"
            if line == "data: [DONE]":
                ended = True
                continue
            out.append(ChatCompletionChunk.model_validate(orjson.loads(line[6:]), strict=True))
    assert ended
    return out


def test_a_text_reply_matches_the_sdk_types(live_app, key):
    body = {"model": DEMO, "messages": [{"role": "user", "content": "types /words 4"}]}
    whole = ChatCompletion.model_validate(post(live_app, key, body).json(), strict=True)
    assert whole.choices[0].message.content == "word1 word2 word3 word4" and whole.choices[0].finish_reason == "stop"
    assert whole.usage is not None and whole.usage.total_tokens == whole.usage.prompt_tokens + whole.usage.completion_tokens
    streamed = chunks(live_app, key, {**body, "stream_options": {"include_usage": True}})
    assert streamed[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == "word1 word2 word3 word4"
    assert [c.choices[0].finish_reason for c in streamed if c.choices][-1] == "stop"
    assert streamed[-1].choices == [] and streamed[-1].usage == whole.usage  # the usage chunk, last
    assert {c.id for c in streamed} == {streamed[0].id} and streamed[0].id.startswith("chatcmpl-")


def test_a_tool_round_trip_matches_the_sdk_types(live_app, key):
    question = {"role": "user", "content": "What is 12 * 3?"}
    body = {"model": DEMO, "tools": [CALCULATE], "messages": [question]}
    whole = ChatCompletion.model_validate(post(live_app, key, body).json(), strict=True)
    assert whole.choices[0].finish_reason == "tool_calls"
    [call] = whole.choices[0].message.tool_calls
    assert (call.type, call.function.name, orjson.loads(call.function.arguments)) == ("function", "calculate", {"expression": "12 * 3"})

    streamed = chunks(live_app, key, body)
    calls = [tool for c in streamed if c.choices for tool in c.choices[0].delta.tool_calls or ()]
    assert [(t.index, t.id, t.function.name) for t in calls] == [(0, call.id, "calculate")]
    assert streamed[-1].choices[0].finish_reason == "tool_calls"

    answered = {**body, "messages": [
        question, whole.choices[0].message.model_dump(exclude_none=True), {"role": "tool", "tool_call_id": call.id, "content": "36"},
    ]}
    after = ChatCompletion.model_validate(post(live_app, key, answered).json(), strict=True)
    assert after.choices[0].finish_reason == "stop" and after.choices[0].message.content


def test_the_model_list_matches_the_sdk_types(live_app, key):
    listed = httpx.get(f"{live_app.url}/v1/models", headers={"Authorization": f"Bearer {key}"}).json()
    assert listed["object"] == "list"
    models = [Model.model_validate(entry, strict=True) for entry in listed["data"]]
    assert DEMO in {model.id for model in models}


def test_one_model_is_retrieved_through_the_sdk_and_an_unknown_one_is_404(live_app, key):
    import openai

    sdk = openai.OpenAI(base_url=f"{live_app.url}/v1", api_key=key, max_retries=0)
    assert sdk.models.retrieve(DEMO).id == DEMO
    with pytest.raises(openai.NotFoundError) as missing:
        sdk.models.retrieve("no-such-model")
    assert missing.value.code == "model_not_found"
