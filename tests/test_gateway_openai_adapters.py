"""What the provider adapters make of a gateway call's options: the OpenAI adapter sends `stop`,
`top_p` and `tool_choice` in OpenAI's shape, and the demo model ends its reply at a stop sequence.
And the site's error handlers answer under /v1/ in OpenAI's error shape."""

import asyncio

import orjson
import pytest
from django.test import RequestFactory

from parley import errors
from providers.base import ChatRequest, Finish, TextDelta, Usage
from providers.demo import DemoProvider, cut_at_stop
from providers.openai_chat import request_params

TOOLS = ({"name": "weather", "description": "", "parameters": {"type": "object", "properties": {}}},)
HI = [{"role": "user", "content": "Hi"}]


def test_the_openai_adapter_sends_stop_and_top_p():
    params = request_params(ChatRequest("m", HI, stop=("\n", "END"), top_p=0.25), "http://127.0.0.1/v1")
    assert (params["stop"], params["top_p"]) == (["\n", "END"], 0.25)


def test_the_openai_adapter_leaves_out_what_the_call_did_not_set():
    params = request_params(ChatRequest("m", HI, tools=TOOLS), "http://127.0.0.1/v1")
    assert not {"stop", "top_p", "tool_choice", "temperature"} & set(params)


@pytest.mark.parametrize(("choice", "sent"), [
    ("auto", "auto"), ("none", "none"), ("required", "required"),
    ({"name": "weather"}, {"type": "function", "function": {"name": "weather"}}),
])
def test_the_openai_adapter_sends_the_tool_choice_in_openais_shape(choice, sent):
    params = request_params(ChatRequest("m", HI, tools=TOOLS, tool_choice=choice), "http://127.0.0.1/v1")
    assert params["tool_choice"] == sent


def test_a_tool_choice_without_tools_is_not_sent():
    assert "tool_choice" not in request_params(ChatRequest("m", HI, tool_choice="auto"), "http://127.0.0.1/v1")


@pytest.mark.parametrize(("stops", "kept"), [
    ((), "word1 word2 word3 word4"),
    (("zzz",), "word1 word2 word3 word4"),
    ((" word3",), "word1 word2"),
    (("d2 wo",), "word1 wor"),  # a sequence across pieces
    (("word4", "word2"), "word1 "),  # the first of them in the text, whatever their order
    (("word1",), ""),
])
def test_the_demo_reply_ends_where_the_first_stop_sequence_begins(stops, kept):
    pieces = ["word1", " word2", " word3", " word4"]
    assert "".join(cut_at_stop(pieces, stops)) == kept


def test_the_demo_model_streams_up_to_a_stop_sequence_and_finishes_with_stop(settings):
    settings.PARLEY_DEMO_TOKENS_PER_SECOND = 0

    async def run() -> list:
        request = ChatRequest("parley-demo", [{"role": "user", "content": "/words 6"}], stop=(" word4",))
        return [event async for event in DemoProvider().stream(request)]

    events = asyncio.run(run())
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "word1 word2 word3"
    assert next(e for e in events if isinstance(e, Usage)).completion_tokens == 3
    assert events[-1] == Finish("stop", "parley-demo-1")


@pytest.mark.parametrize(("handler", "status"), [(errors.not_found, 404), (errors.server_error, 500), (errors.csrf_failure, 403)])
def test_error_handlers_answer_in_openais_shape_under_v1(handler, status):
    response = handler(RequestFactory().post("/v1/chat/completions"))
    assert response.status_code == status and response["Content-Type"] == "application/json"
    error = orjson.loads(response.content)["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]


def test_error_handlers_keep_the_apis_shape_under_api():
    response = errors.not_found(RequestFactory().get("/api/nowhere"))
    assert orjson.loads(response.content)["error"]["code"] == "not_found"


def test_tool_turns_go_out_in_openais_shape_even_without_tools_on_offer():
    history = [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": "", "tool_calls": [{"id": "call_1", "name": "weather", "arguments": "{}"}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "Sunny"},
    ]
    sent = request_params(ChatRequest("m", history), "http://127.0.0.1/v1")["messages"]
    assert sent[1] == {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{}"}},
    ]}
    assert sent[2] == {"role": "tool", "tool_call_id": "call_1", "content": "Sunny"}
