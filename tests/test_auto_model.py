"""The `auto` model end to end: listed while a model is offered, sent through the real send path
(WebSocket and HTTP) where the router's choice answers and is billed, the reply records the rule,
the conversation keeps `auto`; titles and agent runs ask the chosen model; nothing calls or bills
`auto` itself (discovery, the plan's fallback, the support console leave it alone)."""

import asyncio
from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient, Client

from accounts.models import Plan
from agents import actions as agent_actions
from agents import runner
from billing import calls
from billing.models import UsageRecord
from chat import discovery
from chat.actions import ActionError, create_conversation
from chat.models import ChatModel, Conversation, Message
from chat.replies import send_message
from chat.titles import generate_title
from routing import router
from routing.models import RouteRule
from tests.fakes import Scenario
from tests.fakes.openai_server import OpenAIFake
from tests.helpers import connect, receive_until_final, reply_events

pytestmark = pytest.mark.django_db(transaction=True)

CODE = "Why does this fail?\n```python\nprint(1/0)\n```\n/words 4"


@pytest.fixture
def priced(transactional_db) -> ChatModel:
    """A second model the offline demo provider serves, at a price: the free demo stays the cheapest."""
    model = ChatModel.objects.create(
        name="priced-demo", label="Priced demo", provider="demo", context_window=8192, max_output_tokens=512,
        input_price_per_million=Decimal("10"), output_price_per_million=Decimal("40"),
    )
    RouteRule.objects.create(name="Code questions", target=model, contains_code=True)
    router.forget_cached_rules()
    return model


def auto() -> ChatModel:
    return ChatModel.objects.get(name="auto")


# Through the send path --------------------------------------------------------------------------

async def test_a_websocket_send_to_auto_is_answered_by_the_rules_model_and_billed_as_it(priced, alice):
    communicator = await connect(alice)
    assert (await communicator.connect())[0]
    await communicator.send_json_to({"type": "send", "conversation": None, "content": CODE, "model": "auto"})
    created = await communicator.receive_json_from(timeout=5)
    assert created["type"] == "message" and created["conversation"]["model"] == "auto"
    sent = created["assistant_message"]
    assert (sent["provider"], sent["model"]) == ("demo", "priced-demo")
    assert sent["routing"] == {"requested": "auto", "rule": "Code questions", "why": "the message contains code"}
    _, final = await receive_until_final(communicator, sent["id"])
    assert final["type"] == "done" and final["status"] == "complete"

    reply = await Message.objects.aget(pk=sent["id"])
    assert reply.model == "priced-demo" and reply.routing["rule"] == "Code questions"
    entry = await UsageRecord.objects.aget(message_id=reply.pk)
    assert entry.model == "priced-demo" and entry.cost_usd > 0  # billed as the model that answered
    conversation = await Conversation.objects.select_related("model").aget(pk=created["conversation"]["id"])
    assert conversation.model.name == "auto"  # the conversation keeps routing

    # The next message holds no code: no rule applies, and the free demo is the cheapest.
    await communicator.send_json_to({"type": "send", "conversation": conversation.pk, "content": "Thanks /words 3"})
    second = await communicator.receive_json_from(timeout=5)
    assert second["assistant_message"]["model"] == "parley-demo"
    assert second["assistant_message"]["routing"]["rule"] == "cheapest that fits"
    assert "Parley demo (offline) is the cheapest model that fits: about nothing" in second["assistant_message"]["routing"]["why"]
    await receive_until_final(communicator, second["assistant_message"]["id"])
    assert not await UsageRecord.objects.filter(model="auto").aexists()
    await communicator.disconnect()


async def test_an_http_send_to_auto_records_the_rule_and_the_api_shows_it(priced, alice):
    client = AsyncClient()
    await client.aforce_login(alice)
    created = await client.post("/api/conversations/", {"model": "auto"}, content_type="application/json")
    conversation = created.json()["id"]
    response = await client.post(
        f"/api/conversations/{conversation}/messages", {"content": CODE}, content_type="application/json",
    )
    assert response.status_code == 201, response.content
    reply_id = response.json()["assistant_message"]["id"]
    await reply_events(alice, reply_id)
    stored = (await client.get(f"/api/conversations/{conversation}/")).json()["messages"][-1]
    assert stored["id"] == reply_id and stored["model"] == "priced-demo"
    assert stored["routing"]["rule"] == "Code questions" and stored["routing"]["requested"] == "auto"
    assert (await UsageRecord.objects.aget(message_id=reply_id)).model == "priced-demo"


async def test_a_regenerate_under_auto_is_routed_again(priced, alice):
    from chat.replies import regenerate_message

    first = await send_message(alice, None, "Hello /words 2", "auto")
    await reply_events(alice, first["assistant_message"]["id"])
    assert first["assistant_message"]["model"] == "parley-demo"
    await RouteRule.objects.filter(name="Code questions").aupdate(contains_code=False)  # now: every message
    router.forget_cached_rules()
    again = await regenerate_message(alice, first["assistant_message"]["id"])
    assert again["assistant_message"]["model"] == "priced-demo"
    assert again["assistant_message"]["routing"]["why"] == "it applies to every message"
    await reply_events(alice, again["assistant_message"]["id"])


async def test_when_no_model_can_take_the_message_the_send_is_refused_and_nothing_stored(priced, alice):
    await ChatModel.objects.exclude(name="auto").aupdate(context_window=600)
    conversation = await sync_to_async(create_conversation)(alice, "auto")
    with pytest.raises(ActionError) as refused:
        await send_message(alice, conversation.pk, "word " * 400)
    assert refused.value.code == "context_too_long" and "too long for every model you may use" in refused.value.detail
    assert not await Message.objects.filter(conversation=conversation).aexists()
    sent = await send_message(alice, conversation.pk, "short /words 1")  # the slot and the conversation are free
    await reply_events(alice, sent["assistant_message"]["id"])


# Titles and agent runs ask the chosen model ----------------------------------------------------

def test_the_title_of_an_auto_conversation_is_asked_of_its_first_replys_model(alice, settings):
    async def scenario():
        async with OpenAIFake(Scenario(tokens=4)) as fake:
            settings.OPENAI_BASE_URL, settings.OPENAI_API_KEY = fake.base_url, "sk-test"
            await ChatModel.objects.acreate(name="fake-gpt", label="Fake", provider="openai", base_url=fake.base_url)
            conversation = await Conversation.objects.acreate(owner=alice, model=await ChatModel.objects.aget(name="auto"))
            await conversation.messages.acreate(role="user", content="Plan a trip to Lisbon")
            await conversation.messages.acreate(role="assistant", content="Sure.", provider="openai", model="fake-gpt")
            title = await asyncio.to_thread(generate_title, conversation.pk)
            return title, [request.json["model"] for request in fake.requests]

    title, asked = asyncio.run(scenario())
    assert title == "Hello, wörld —" and asked == ["fake-gpt"]
    assert UsageRecord.objects.get(kind="title").model == "fake-gpt"


def test_an_agent_run_in_an_auto_conversation_is_routed_once_by_its_goal(priced, alice, monkeypatch):
    monkeypatch.setattr(agent_actions, "enqueue_run", lambda run_id: None)
    RouteRule.objects.filter(name="Code questions").update(contains_code=False, keywords="compute")
    router.forget_cached_rules()
    conversation = create_conversation(alice, "auto")
    run = agent_actions.start_run(alice, conversation.pk, "Compute 6 * 6")
    assert run.model == "priced-demo"  # every model step asks it
    runner.execute(run.pk, "task-1")
    run.refresh_from_db()
    assert run.status == "succeeded"
    rows = UsageRecord.objects.filter(kind="agent", user=alice)
    assert rows.exists() and set(rows.values_list("model", flat=True)) == {"priced-demo"}
    plain = agent_actions.start_run(alice, conversation.pk, "Say hello")
    assert plain.model == "parley-demo"  # no rule: the cheapest


# Listed, never called, never billed as itself ---------------------------------------------------

def test_auto_is_listed_while_a_model_is_offered_and_never_the_default(alice_client, settings):
    body = alice_client.get("/api/models/").json()
    listed = {model["name"]: model for model in body["results"]}
    assert listed["auto"]["auto"] is True and listed["auto"]["price_known"] is None
    assert body["default"] == "parley-demo"
    html = alice_client.get("/").content.decode()
    assert '<option value="auto" data-vision data-auto' in html and "Auto (picks a model for each message)</option>" in html
    settings.PARLEY_DEMO_MODEL = False  # nothing left to pick
    assert alice_client.get("/api/models/").json()["results"] == []
    assert '<option value="auto"' not in alice_client.get("/").content.decode()


async def test_auto_switched_off_in_admin_leaves_the_picker_and_its_conversations_must_pick_another(priced, alice):
    conversation = await sync_to_async(create_conversation)(alice, "auto")
    await ChatModel.objects.filter(name="auto").aupdate(enabled=False)
    names = await sync_to_async(lambda: list(ChatModel.objects.pickable().values_list("name", flat=True)))()
    assert "auto" not in names and "priced-demo" in names
    with pytest.raises(ActionError) as refused:
        await send_message(alice, conversation.pk, "Hello")
    assert refused.value.code == "unknown_model" and "no longer offered" in refused.value.detail


def test_an_auto_conversations_page_says_auto_without_a_price(alice_client, alice):
    conversation = create_conversation(alice, "auto")
    html = alice_client.get(f"/c/{conversation.pk}/").content.decode()
    assert "Auto (picks a model for each message)</span>" in html


def test_discovery_leaves_the_auto_row_alone(transactional_db, settings):
    from providers.endpoints import Endpoint
    from providers.listing import Listed

    settings.OPENAI_BASE_URL = "http://127.0.0.1:8080/v1"
    outcome = discovery.store(Endpoint("openai", "openai", "http://127.0.0.1:8080/v1"), [Listed("auto", "auto"), Listed("m", "m")])
    assert "auto" in outcome.error  # a listed model of that name is left out: the name is taken
    row = auto()
    assert (row.provider, row.endpoint, row.available, row.enabled) == ("auto", "", True, True)
    discovery.store(Endpoint("openai", "openai", "http://127.0.0.1:8080/v1"), [])
    assert auto().available


def test_auto_is_never_a_plans_fallback(alice):
    Plan.objects.filter(name="Free").update(cost_per_month=Decimal("1.00"), fallback_model=auto(), fallback_at_percent=1)
    UsageRecord.objects.create(user=alice, kind="reply", provider="demo", model="parley-demo", cost_usd=Decimal("0.50"), outcome="complete")
    from accounts.plans import limits_for

    admitted = calls.admit(alice.pk, limits_for(alice.pk)[1], ChatModel.objects.get(name="parley-demo"), "", [("user", "hi")], kind="reply")
    calls.release(admitted)
    assert admitted.model.name == "parley-demo" and admitted.notice == ""


def test_the_support_consoles_filters_leave_out_auto(transactional_db, django_user_model):
    from django.contrib.auth.models import Group

    from support.roles import SUPPORT_GROUP, ensure_support_group

    ensure_support_group()  # a flush took the migration's group away
    agent = django_user_model.objects.create_user("sam", password="pw-sam-123456")
    agent.groups.add(Group.objects.get(name=SUPPORT_GROUP))
    client = Client()
    client.force_login(agent)
    html = client.get("/support/").content.decode()
    assert "<option>parley-demo</option>" in html and "<option>auto</option>" not in html


def test_the_demo_adapter_is_never_made_for_auto():
    from providers import new_provider

    with pytest.raises(KeyError, match="never called"):
        new_provider("auto")
