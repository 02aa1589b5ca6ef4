"""Tool calling through both adapters, with the real SDKs against local servers that stream each
API's tool-call wire format: the tools offered in the API's own shape, the streamed call put back
together as one normalized `ToolCall`, and the call and its result sent back in the next turn."""

import json

import pytest

from providers.anthropic_messages import AnthropicProvider
from providers.base import ChatRequest, Finish, TextDelta, Timeouts, ToolCall
from providers.openai_chat import OpenAIProvider
from tests.fakes import Scenario, expected_text
from tests.fakes.anthropic_server import AnthropicFake
from tests.fakes.openai_server import OpenAIFake

TIMEOUTS = Timeouts(connect=5.0, first_token=5.0, idle=5.0)
CALCULATE = {
    "name": "calculate",
    "description": "Compute an arithmetic expression.",
    "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"],
                   "additionalProperties": False},
}
ARGUMENTS = '{"expression": "(12 + 30) * 2", "note": "naïve — 漢字"}'


@pytest.fixture(params=["openai", "anthropic"])
async def adapter(request):
    fake = OpenAIFake() if request.param == "openai" else AnthropicFake()
    async with fake:
        fake.scenario = Scenario("tool_call", tokens=6, tool_arguments=ARGUMENTS, fragment=7)
        if request.param == "openai":
            provider = OpenAIProvider(TIMEOUTS, api_key="sk-test", base_url=fake.base_url, max_retries=0)
        else:
            provider = AnthropicProvider(TIMEOUTS, api_key="sk-ant-test", base_url=fake.base_url, max_retries=0)
        yield request.param, fake, provider
        await provider.aclose()


def asking(messages: list[dict]) -> ChatRequest:
    return ChatRequest(model="some-model", messages=messages, system="Use tools.", tools=(CALCULATE,))


async def events_of(provider, request: ChatRequest) -> list:
    return [event async for event in provider.stream(request)]


async def test_a_streamed_tool_call_comes_back_whole_and_normalized(adapter):
    api, fake, provider = adapter
    events = await events_of(provider, asking([{"role": "user", "content": "What is (12 + 30) * 2?"}]))
    calls = [event for event in events if isinstance(event, ToolCall)]
    assert len(calls) == 1 and calls[0].name == "calculate" and calls[0].call_id
    assert json.loads(calls[0].arguments) == json.loads(ARGUMENTS)  # pieces cut mid-character, put back exactly
    assert isinstance(events[-1], Finish) and events[-1].reason == "tool_calls"
    sent = fake.last.json["tools"]
    if api == "openai":
        assert sent == [{"type": "function", "function": CALCULATE}]
    else:
        assert sent == [{"name": "calculate", "description": CALCULATE["description"], "input_schema": CALCULATE["parameters"]}]


async def test_the_call_and_its_result_go_back_in_the_apis_own_shape(adapter):
    api, fake, provider = adapter
    turns = [
        {"role": "user", "content": "What is (12 + 30) * 2?"},
        {"role": "assistant", "content": "Let me compute.", "tool_calls": [{"id": "call_1", "name": "calculate", "arguments": ARGUMENTS}]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"result": "84"}'},
    ]
    events = await events_of(provider, asking(turns))
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == expected_text(6)
    assert not any(isinstance(e, ToolCall) for e in events) and events[-1].reason == "stop"
    sent = fake.last.json["messages"]
    if api == "openai":
        assert sent[2] == {"role": "assistant", "content": "Let me compute.", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "calculate", "arguments": ARGUMENTS}}]}
        assert sent[3] == {"role": "tool", "tool_call_id": "call_1", "content": '{"result": "84"}'}
    else:
        assert sent[1] == {"role": "assistant", "content": [
            {"type": "text", "text": "Let me compute."},
            {"type": "tool_use", "id": "call_1", "name": "calculate", "input": json.loads(ARGUMENTS)}]}
        assert sent[2] == {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_1", "content": '{"result": "84"}'}]}


async def test_a_call_whose_arguments_are_not_json_is_still_sent_back(adapter):
    api, fake, provider = adapter
    turns = [
        {"role": "user", "content": "Compute."},
        {"role": "assistant", "content": "", "tool_calls": [{"id": "call_1", "name": "calculate", "arguments": "{oops"}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "The arguments were not valid JSON."},
    ]
    events = await events_of(provider, asking(turns))
    assert events[-1].reason == "stop"
    sent = fake.last.json["messages"]
    if api == "anthropic":
        assert sent[1]["content"] == [{"type": "tool_use", "id": "call_1", "name": "calculate", "input": {}}]


async def test_plain_chat_sends_no_tools_and_its_messages_untouched(adapter):
    api, fake, provider = adapter
    fake.scenario = Scenario(tokens=4)
    request = ChatRequest(model="some-model", messages=[{"role": "user", "content": "Hi"}])
    events = await events_of(provider, request)
    assert "tools" not in fake.last.json and events[-1].reason == "stop"
    assert fake.last.json["messages"][-1] == {"role": "user", "content": "Hi"}
