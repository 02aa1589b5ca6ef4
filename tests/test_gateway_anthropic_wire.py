"""Anthropic's Messages format read into Parley's neutral call, and Parley's tool choice written
back as the Anthropic API's: blocks to turns, without a server."""

import orjson
import pytest
from anthropic.types import Message, RawMessageStreamEvent
from pydantic import TypeAdapter

from chat.actions import ActionError
from gateway.anthropic_wire import Reply, read_request
from providers.anthropic_messages import request_params
from providers.base import ChatRequest

EVENT = TypeAdapter(RawMessageStreamEvent)


def read(**body) -> object:
    return read_request(orjson.dumps({"model": "m", "max_tokens": 10, **body}), "application/json")


def test_tool_use_and_tool_result_blocks_become_neutral_turns():
    call = read(messages=[
        {"role": "user", "content": "Work it out."},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "s"},
            {"type": "text", "text": "Let me see."},
            {"type": "tool_use", "id": "toolu_1", "name": "calculate", "input": {"expression": "1 + 1"}},
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "2"}]},
            {"type": "text", "text": "And double it."},
        ]},
    ]).call
    assert call.messages == [
        {"role": "user", "content": "Work it out."},
        {"role": "assistant", "content": "Let me see.",
         "tool_calls": [{"id": "toolu_1", "name": "calculate", "arguments": '{"expression":"1 + 1"}'}]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "2"},
        {"role": "user", "content": "And double it."},
    ]


def test_a_failed_tool_result_says_so_in_its_text():
    call = read(messages=[{"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "t", "content": "no such file", "is_error": True},
    ]}]).call
    assert call.messages == [{"role": "tool", "tool_call_id": "t", "content": "Error: no such file"}]


def test_options_are_read_into_the_neutral_call():
    parsed = read(
        messages=[{"role": "user", "content": "hi"}], system=[{"type": "text", "text": "A"}, {"type": "text", "text": "B"}],
        stop_sequences=["END"], temperature=0, top_p=0.5, top_k=40, metadata={"user_id": "u-1"}, stream=True,
        tools=[{"name": "look", "input_schema": {"type": "object"}}], tool_choice={"type": "any"},
    )
    call = parsed.call
    assert parsed.stream and call.system == "A\n\nB" and call.end_user == "u-1" and call.max_output == 10
    assert call.options == {"temperature": 0.0, "top_p": 0.5, "stop": ("END",), "tool_choice": "required"}
    assert call.tools == ({"name": "look", "description": "", "parameters": {"type": "object"}},)


@pytest.mark.parametrize(("choice", "neutral", "sent"), [
    ({"type": "auto"}, "auto", {"type": "auto"}),
    ({"type": "any"}, "required", {"type": "any"}),
    ({"type": "none"}, "none", {"type": "none"}),
    ({"type": "tool", "name": "look"}, {"name": "look"}, {"type": "tool", "name": "look"}),
])
def test_tool_choice_goes_through_parleys_terms_and_back(choice, neutral, sent):
    call = read(messages=[{"role": "user", "content": "hi"}], tools=[{"name": "look"}], tool_choice=choice).call
    assert call.options["tool_choice"] == neutral
    request = ChatRequest("claude", call.messages, tools=call.tools, tool_choice=neutral, stop=("X",), top_p=0.9)
    params = request_params(request)
    assert params["tool_choice"] == sent and params["stop_sequences"] == ["X"] and params["extra_body"] == {"top_p": 0.9}


@pytest.mark.parametrize("body", [
    {"messages": [{"role": "user", "content": "hi"}], "thinking": {"type": "enabled", "budget_tokens": 1024}},
    {"messages": [{"role": "user", "content": [{"type": "tool_result"}]}]},
    {"messages": [{"role": "assistant", "content": [{"type": "tool_use", "id": "x", "name": "y", "input": "z"}]}]},
    {"messages": [{"role": "user", "content": "hi"}], "top_k": -1},
    {"messages": [{"role": "user", "content": "hi"}], "metadata": "u"},
])
def test_malformed_fields_are_refused(body):
    with pytest.raises(ActionError) as refused:
        read(**body)
    assert refused.value.code == "invalid_input"


def test_tool_calls_after_text_take_the_blocks_after_it():
    reply = Reply("msg_1", "m")
    final = {"type": "done", "finish_reason": "tool_calls", "usage": {"prompt_tokens": 7, "completion_tokens": 3},
             "tool_calls": [{"id": "a", "name": "look", "arguments": '{"q": 1}'}, {"id": "b", "name": "look", "arguments": "not json"}]}
    events = [EVENT.validate_python(event, strict=True) for event in reply.ending(final, text_open=True)]
    assert [(e.type, getattr(e, "index", None)) for e in events] == [
        ("content_block_stop", 0),
        ("content_block_start", 1), ("content_block_delta", 1), ("content_block_stop", 1),
        ("content_block_start", 2), ("content_block_delta", 2), ("content_block_stop", 2),
        ("message_delta", None), ("message_stop", None),
    ]
    assert [events[2].delta.partial_json, events[5].delta.partial_json] == ['{"q":1}', "{}"]
    assert events[7].delta.stop_reason == "tool_use" and (events[7].usage.input_tokens, events[7].usage.output_tokens) == (7, 3)
    whole = Message.model_validate(reply.whole("Looking.", final), strict=True)
    assert [block.type for block in whole.content] == ["text", "tool_use", "tool_use"]


def test_an_empty_reply_still_has_one_text_block():
    events = Reply("msg_2", "m").ending({"type": "done", "finish_reason": "stop"}, text_open=False)
    assert [e["type"] for e in events] == ["content_block_start", "content_block_stop", "message_delta", "message_stop"]
