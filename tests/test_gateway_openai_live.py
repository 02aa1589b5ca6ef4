"""The OpenAI-compatible gateway through the official openai SDK (sync and async), over a real
daphne, against the fake OpenAI upstream and the demo model: what a client sends reaches the
upstream, and what the upstream answers reaches the client."""

import asyncio
import base64
import httpx
import openai
import pytest

from accounts.models import ApiToken, PlanOverride
from billing.models import UsageRecord
from chat.models import Message
from tests.fakes import Scenario, expected_text
from providers.base import estimate_tokens
from tests.files import png
from tests import gateway_live
from tests.gateway_live import UPSTREAM, async_client, client, upstream_model

DEMO = "parley-demo"
# The shared fixtures, used by name.
fake_upstream, upstream, gateway_app = gateway_live.fake_upstream, gateway_live.upstream, gateway_live.gateway_app

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def key(alice) -> str:
    return ApiToken.issue(alice, "gateway", scopes=["gateway"])[1]


def png_data_url() -> str:
    return "data:image/png;base64," + base64.b64encode(png(40, 30)).decode()


def test_a_whole_completion_comes_from_the_upstream(gateway_app, upstream, key):
    upstream_model(upstream)
    completion = client(gateway_app, key).chat.completions.create(
        model=UPSTREAM, messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}],
    )
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == expected_text(12)
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.completion_tokens == 12 and completion.usage.prompt_tokens > 0
    sent = upstream.requests[-1].json
    assert sent["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]


def test_a_streamed_completion_ends_with_the_usage_when_asked(gateway_app, upstream, key):
    upstream_model(upstream)
    stream = client(gateway_app, key).chat.completions.create(
        model=UPSTREAM, messages=[{"role": "user", "content": "Hello"}], stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == expected_text(12)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 12
    assert all(chunk.usage is None for chunk in chunks[:-1])


def test_a_stream_without_include_usage_has_no_usage_chunk(gateway_app, upstream, key):
    upstream_model(upstream)
    chunks = list(client(gateway_app, key).chat.completions.create(
        model=UPSTREAM, messages=[{"role": "user", "content": "Hello"}], stream=True,
    ))
    assert all(chunk.choices and chunk.usage is None for chunk in chunks)


def test_the_async_client_streams_and_completes(gateway_app, upstream, key):
    upstream_model(upstream)

    async def scenario() -> tuple[str, str]:
        async with async_client(gateway_app, key) as sdk:
            whole = await sdk.chat.completions.create(model=DEMO, messages=[{"role": "user", "content": "hi /words 5"}])
            stream = await sdk.chat.completions.create(model=UPSTREAM, messages=[{"role": "user", "content": "Hi"}], stream=True)
            streamed = "".join([chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices])
            return whole.choices[0].message.content, streamed

    whole, streamed = asyncio.run(scenario())
    assert whole == "word1 word2 word3 word4 word5"
    assert streamed == expected_text(12)


def test_sampling_options_reach_the_upstream(gateway_app, upstream, key):
    upstream_model(upstream)
    client(gateway_app, key).chat.completions.create(
        model=UPSTREAM, messages=[{"role": "user", "content": "Hello"}], temperature=0.3, top_p=0.9, stop=["\n", "END"],
    )
    sent = upstream.requests[-1].json
    assert (sent["temperature"], sent["top_p"], sent["stop"]) == (0.3, 0.9, ["\n", "END"])


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_the_most_output_reaches_the_upstream_capped_by_the_plan(gateway_app, upstream, alice, key, field):
    upstream_model(upstream)
    sdk = client(gateway_app, key)
    completion = sdk.chat.completions.create(model=UPSTREAM, messages=[{"role": "user", "content": "Hi"}], **{field: 5})
    assert upstream.requests[-1].json["max_tokens"] == 5
    assert completion.choices[0].finish_reason == "length" and completion.usage.completion_tokens == 5
    PlanOverride.objects.create(user=alice, max_output_tokens=3)
    sdk.chat.completions.create(model=UPSTREAM, messages=[{"role": "user", "content": "Hi"}], **{field: 50})
    assert upstream.requests[-1].json["max_tokens"] == 3


def test_the_demo_model_honours_stop_sequences(gateway_app, key):
    completion = client(gateway_app, key).chat.completions.create(
        model=DEMO, messages=[{"role": "user", "content": "/words 9"}], stop=[" word4", "word7"],
    )
    assert completion.choices[0].message.content == "word1 word2 word3"
    assert completion.choices[0].finish_reason == "stop"


def test_more_than_one_choice_is_refused(gateway_app, key):
    with pytest.raises(openai.BadRequestError) as refused:
        client(gateway_app, key).chat.completions.create(model=DEMO, messages=[{"role": "user", "content": "Hi"}], n=2)
    assert refused.value.param == "n"


def test_a_tool_call_round_trip(gateway_app, upstream, key):
    upstream_model(upstream)
    upstream.server.scenario = Scenario(kind="tool_call", tokens=4, tool_arguments='{"city": "Oslo"}')
    tools = [{"type": "function", "function": {
        "name": "weather", "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }}]
    sdk = client(gateway_app, key)
    messages = [{"role": "user", "content": "Weather in Oslo?"}]
    first = sdk.chat.completions.create(
        model=UPSTREAM, messages=messages, tools=tools, tool_choice={"type": "function", "function": {"name": "weather"}},
    )
    sent = upstream.requests[-1].json
    assert sent["tools"] == tools
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "weather"}}
    assert first.choices[0].finish_reason == "tool_calls"
    call = first.choices[0].message.tool_calls[0]
    assert (call.id, call.type, call.function.name, call.function.arguments) == ("call_fake1", "function", "weather", '{"city": "Oslo"}')

    messages += [first.choices[0].message.model_dump(exclude_none=True), {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 21 C"}]
    stream = sdk.chat.completions.create(model=UPSTREAM, messages=messages, tools=tools, tool_choice="auto", stream=True)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == expected_text(4)
    sent = upstream.requests[-1].json
    assert sent["tool_choice"] == "auto"
    assert sent["messages"][-2]["tool_calls"][0]["function"] == {"name": "weather", "arguments": '{"city": "Oslo"}'}
    assert sent["messages"][-1] == {"role": "tool", "tool_call_id": "call_fake1", "content": "Sunny, 21 C"}


def test_a_streamed_tool_call_reaches_the_client(gateway_app, upstream, key):
    upstream_model(upstream)
    upstream.server.scenario = Scenario(kind="tool_call", tool_arguments='{"x": 1}')
    tools = [{"type": "function", "function": {"name": "probe", "parameters": {"type": "object", "properties": {}}}}]
    chunks = list(client(gateway_app, key).chat.completions.create(
        model=UPSTREAM, messages=[{"role": "user", "content": "Probe"}], tools=tools, tool_choice="required", stream=True,
    ))
    assert upstream.requests[-1].json["tool_choice"] == "required"
    calls = [call for chunk in chunks if chunk.choices for call in chunk.choices[0].delta.tool_calls or ()]
    assert [(c.id, c.function.name, c.function.arguments) for c in calls] == [("call_fake1", "probe", '{"x": 1}')]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"


def test_the_end_users_name_is_kept_in_the_replys_routing_record(gateway_app, alice):
    raw = ApiToken.issue(alice, "kept", scopes=["gateway"], stores_calls=True)[1]
    response = client(gateway_app, raw).chat.completions.with_raw_response.create(
        model=DEMO, messages=[{"role": "user", "content": "hi /words 2"}], user="customer-42",
    )
    reply = Message.objects.get(pk=int(response.headers["x-parley-message-id"]))
    assert reply.routing["end_user"] == "customer-42"


def test_an_image_sent_as_a_data_url_reaches_the_upstream_as_an_image_part(gateway_app, upstream, key):
    upstream_model(upstream)
    url = png_data_url()
    client(gateway_app, key).chat.completions.create(model=UPSTREAM, messages=[{"role": "user", "content": [
        {"type": "text", "text": "What colour?"}, {"type": "image_url", "image_url": {"url": url}},
    ]}])
    content = upstream.requests[-1].json["messages"][-1]["content"]
    assert content == [{"type": "text", "text": "What colour?"}, {"type": "image_url", "image_url": {"url": url}}]


def test_an_image_on_the_web_is_refused_naming_the_field(gateway_app, upstream, key):
    upstream_model(upstream)
    with pytest.raises(openai.BadRequestError) as refused:
        client(gateway_app, key).chat.completions.create(model=UPSTREAM, messages=[{"role": "user", "content": [
            {"type": "text", "text": "What colour?"}, {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
        ]}])
    assert refused.value.param == "messages[0].content[1].image_url.url"
    assert upstream.requests == []


def test_models_lists_what_the_token_may_call(gateway_app, upstream, key):
    upstream_model(upstream)
    names = [model.id for model in client(gateway_app, key).models.list()]
    assert DEMO in names and UPSTREAM in names


def test_a_gateway_call_is_one_ledger_row_of_its_token_and_moves_the_meter(gateway_app, upstream, alice):
    from billing.admission import usage_for

    token, raw = ApiToken.issue(alice, "metered", scopes=["gateway"])
    PlanOverride.objects.create(user=alice, tokens_per_month=1_000_000)
    upstream_model(upstream)

    def used() -> float:
        return next(a["used"] for a in usage_for(alice.pk)["allowances"] if a["name"] == "tokens_per_month")

    before = used()
    completion = client(gateway_app, raw).chat.completions.create(model=UPSTREAM, messages=[{"role": "user", "content": "Hello"}])
    row = UsageRecord.objects.get()
    assert (row.kind, row.api_token_id, row.user_id, row.model) == ("gateway", token.pk, alice.pk, UPSTREAM)
    assert (row.prompt_tokens, row.completion_tokens) == (completion.usage.prompt_tokens, completion.usage.completion_tokens)
    assert used() - before == row.prompt_tokens + row.completion_tokens


def test_a_token_that_stores_nothing_leaves_no_conversation(gateway_app, alice, key):
    from chat.models import Conversation
    from tests.test_models_live import wait_for

    sdk = client(gateway_app, key)
    sdk.chat.completions.create(model=DEMO, messages=[{"role": "user", "content": "hi /words 3"}])
    wait_for(lambda: not Conversation.objects.exists(), 5, "the call's conversation to go")
    assert UsageRecord.objects.filter(kind="gateway").count() == 1


def test_a_token_that_stores_calls_keeps_the_whole_history_for_support(gateway_app, alice, django_user_model):
    from django.contrib.auth.models import Group
    from django.test import Client

    from chat.models import Conversation
    from support.models import SUPPORT_GROUP
    from tests.test_models_live import wait_for

    token, raw = ApiToken.issue(alice, "kept", scopes=["gateway"], stores_calls=True)
    client(gateway_app, raw).chat.completions.create(model=DEMO, messages=[
        {"role": "system", "content": "Answer in words."},
        {"role": "user", "content": "First question"},
        {"role": "assistant", "content": "First answer"},
        {"role": "user", "content": "second /words 3"},
    ])
    conversation = Conversation.objects.get()
    assert (conversation.source, conversation.api_token_id, conversation.owner_id) == ("gateway", token.pk, alice.pk)
    wait_for(lambda: not conversation.messages.filter(status__in=Message.ACTIVE).exists(), 5, "the reply to end")
    stored = [(m.role, m.content) for m in conversation.messages.order_by("pk")]
    assert stored == [("user", "First question"), ("assistant", "First answer"), ("user", "second /words 3"),
                      ("assistant", "word1 word2 word3")]

    sam = django_user_model.objects.create_user("sam", password="sam-password-123")
    sam.groups.add(Group.objects.get_or_create(name=SUPPORT_GROUP)[0])
    from support.roles import ensure_support_group

    ensure_support_group()
    support = Client()
    support.force_login(sam)
    shown = support.get(f"/api/support/conversations/{conversation.pk}/")
    assert shown.status_code == 200, shown.content
    assert "First answer" in shown.content.decode() and "word1 word2 word3" in shown.content.decode()


def test_another_users_token_cannot_read_or_stop_a_gateway_reply(gateway_app, alice, bob):
    raw = ApiToken.issue(alice, "kept", scopes=["gateway"], stores_calls=True)[1]
    stream = client(gateway_app, raw).chat.completions.with_raw_response.create(
        model=DEMO, messages=[{"role": "user", "content": "long /words 40 /slow 50"}], stream=True,
    )
    reply_id = int(stream.headers["x-parley-message-id"])
    chunks = stream.parse()
    next(iter(chunks))
    bobs = {"Authorization": f"Bearer {ApiToken.issue(bob, 'bob', scopes=['chat', 'gateway'])[1]}"}
    for method, path in [("GET", f"/api/messages/{reply_id}/events"), ("POST", f"/api/messages/{reply_id}/stop"),
                         ("GET", f"/api/messages/{reply_id}")]:
        answer = httpx.request(method, f"{gateway_app.url}{path}", headers=bobs, timeout=10)
        assert answer.status_code == 404, (path, answer.text)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert len(text.split()) >= 39  # the first chunk (one word or the role) was read above
    assert Message.objects.get(pk=reply_id).status == "complete"


def test_a_client_that_hangs_up_mid_stream_stops_the_reply_billed_for_what_was_produced(gateway_app, alice):
    from tests.test_models_live import wait_for

    raw = ApiToken.issue(alice, "kept", scopes=["gateway"], stores_calls=True)[1]
    response = client(gateway_app, raw).chat.completions.with_raw_response.create(
        model=DEMO, messages=[{"role": "user", "content": "long /words 400 /slow 20"}], stream=True,
    )
    reply_id = int(response.headers["x-parley-message-id"])
    stream = response.parse()
    seen = 0
    for _chunk in stream:
        seen += 1
        if seen == 5:
            break
    stream.close()
    wait_for(lambda: UsageRecord.objects.filter(message_id=reply_id).exists(), 10, "the stopped reply's ledger row")
    row = UsageRecord.objects.get(message_id=reply_id)
    reply = Message.objects.get(pk=reply_id)
    assert (row.outcome, reply.status) == ("stopped", "stopped")
    # A stopped reply has no count from its model: it is billed at the estimate of what it wrote.
    assert 3 <= len(reply.content.split()) < 400
    assert row.estimated and row.completion_tokens == estimate_tokens(reply.content)


def test_a_hung_up_call_its_token_does_not_store_leaves_only_its_stopped_ledger_row(gateway_app, alice):
    from chat.models import Conversation
    from tests.test_models_live import wait_for

    token, raw = ApiToken.issue(alice, "unkept", scopes=["gateway"])
    stream = client(gateway_app, raw).chat.completions.create(
        model=DEMO, messages=[{"role": "user", "content": "long /words 400 /slow 20"}], stream=True,
    )
    for seen, _chunk in enumerate(stream):
        if seen == 4:
            break
    stream.close()
    wait_for(lambda: UsageRecord.objects.filter(api_token=token).exists(), 10, "the stopped call's ledger row")
    wait_for(lambda: not Conversation.objects.exists(), 5, "the call's conversation to go")
    row = UsageRecord.objects.get(api_token=token)
    assert (row.kind, row.outcome, row.message_id) == ("gateway", "stopped", None)
    assert 0 < row.completion_tokens < estimate_tokens(" ".join(f"word{n}" for n in range(1, 401)))


def test_a_model_that_cannot_see_is_never_sent_an_image(gateway_app, upstream, key):
    upstream_model(upstream, supports_vision=False)
    with pytest.raises(openai.BadRequestError) as refused:
        client(gateway_app, key).chat.completions.create(model=UPSTREAM, messages=[{"role": "user", "content": [
            {"type": "text", "text": "What colour?"}, {"type": "image_url", "image_url": {"url": png_data_url()}},
        ]}])
    assert refused.value.code == "image_not_supported"
    assert upstream.requests == [] and UsageRecord.objects.count() == 0


def test_a_failover_keeps_the_clients_options_and_most_output(gateway_app, upstream, key):
    from chat.models import FailoverLink

    first = upstream_model(upstream, remote=f"{UPSTREAM}#scenario=status&status=503")
    second = upstream_model(upstream, name="fake-second")
    FailoverLink.objects.create(model=first, fallback=second, position=1)
    completion = client(gateway_app, key).chat.completions.create(
        model=UPSTREAM, messages=[{"role": "user", "content": "Hello"}], max_tokens=4, temperature=0.5, stop=["END"],
    )
    assert completion.model.startswith("fake-second") and completion.usage.completion_tokens == 4
    answered = upstream.requests[-1].json
    assert (answered["model"], answered["max_tokens"], answered["temperature"], answered["stop"]) == ("fake-second", 4, 0.5, ["END"])
