"""Limits enforced on real sends: 429 with the limit named, suspension at once, allowed models,
concurrent replies, and reservations settled to the ledger. Two daphne processes share one Redis."""

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import httpx
import pytest
import redis
from django.conf import settings
from django.test import Client

from accounts.models import ApiToken, Plan
from billing import quotas
from billing.models import UsageRecord
from chat import replies
from chat.actions import ActionError
from chat.models import ChatModel, Message
from parley.redis_clients import sync_client_for
from tests.helpers import connect, receive_type


def set_free(**limits) -> None:
    Plan.objects.filter(name="Free").update(**limits)


def post_message(client: Client, content: str, **extra):
    conversation = client.post("/api/conversations/", "{}", content_type="application/json", **extra).json()["id"]
    return client.post(f"/api/conversations/{conversation}/messages", json.dumps({"content": content}),
                       content_type="application/json", **extra)


@pytest.mark.django_db(transaction=True)
def test_past_the_requests_per_minute_a_send_gets_429_naming_the_limit(alice):
    # Only the minute's count is at issue: the earlier replies may still be running on a busy machine.
    set_free(requests_per_minute=3, concurrent_replies=None)
    client = Client()
    client.force_login(alice)
    for _ in range(3):
        assert post_message(client, "hi /words 2").status_code == 201
    before = Message.objects.count()
    refused = post_message(client, "one more /words 2")
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["code"] == "quota_exceeded" and "3 messages a minute" in error["text"]
    assert error["limit"]["name"] == "requests_per_minute" and error["limit"]["remaining"] == 0
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert refused["RateLimit-Limit"] == "3" and refused["RateLimit-Remaining"] == "0"
    assert 0 <= int(refused["RateLimit-Reset"]) <= 60
    assert refused["RateLimit-Policy"] == '3;name="requests_per_minute"'
    assert Message.objects.count() == before  # a refused send stores nothing


@pytest.mark.django_db(transaction=True)
async def test_the_websocket_error_event_carries_the_limit(alice):
    await Plan.objects.filter(name="Free").aupdate(requests_per_minute=1)
    tab = await connect(alice)
    await tab.connect()
    await tab.send_json_to({"type": "send", "conversation": None, "content": "first /words 2", "ref": "a"})
    await receive_type(tab, "message")
    await tab.send_json_to({"type": "send", "conversation": None, "content": "second", "ref": "b"})
    error = await receive_type(tab, "error")
    assert error["code"] == "quota_exceeded" and error["ref"] == "b"
    assert error["limit"]["name"] == "requests_per_minute" and error["limit"]["allowed"] == 1
    assert error["retry_after"] >= 1 and error["limit"]["resets_in"] <= 60
    await tab.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_suspension_stops_new_replies_at_once(alice):
    tab = await connect(alice)
    await tab.connect()
    await tab.send_json_to({"type": "send", "conversation": None, "content": "before /words 2"})
    await receive_type(tab, "message")
    await type(alice).objects.filter(pk=alice.pk).aupdate(suspended=True)  # what the admin action does
    await tab.send_json_to({"type": "send", "conversation": None, "content": "after"})
    error = await receive_type(tab, "error")
    assert error["code"] == "suspended" and "suspended" in error["text"]
    await tab.disconnect()


@pytest.mark.django_db(transaction=True)
def test_a_plan_limited_to_some_models_refuses_the_others(alice):
    other = ChatModel.objects.create(name="only-this", label="Only this", provider="demo")
    Plan.objects.get(name="Free").allowed_models.add(other)
    client = Client()
    client.force_login(alice)
    refused = post_message(client, "hi")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "model_not_allowed"
    conversation = client.post("/api/conversations/", json.dumps({"model": "only-this"}), content_type="application/json").json()
    allowed = client.post(f"/api/conversations/{conversation['id']}/messages", json.dumps({"content": "hi /words 1"}),
                          content_type="application/json")
    assert allowed.status_code == 201


@pytest.mark.django_db(transaction=True)
async def test_concurrent_replies_are_limited_and_a_finished_reply_frees_its_slot(alice):
    await Plan.objects.filter(name="Free").aupdate(concurrent_replies=1)
    first = await replies.send_message(alice, None, "long /words 2000 /slow 10")
    with pytest.raises(ActionError) as refused:
        await replies.send_message(alice, None, "second")
    assert refused.value.code == "quota_exceeded" and refused.value.limit["name"] == "concurrent_replies"
    await replies.stop_message(alice, first["assistant_message"]["id"])
    async for _ in replies.attach(alice, first["assistant_message"]["id"], "0-0"):
        pass
    for _ in range(50):  # the slot is given back just after the final write commits
        try:
            second = await replies.send_message(alice, None, "now /words 1")
            break
        except ActionError:
            await asyncio.sleep(0.05)
    assert second["assistant_message"]["id"]


@pytest.mark.django_db(transaction=True)
async def test_a_reservation_settles_to_what_the_ledger_recorded(alice):
    await Plan.objects.filter(name="Free").aupdate(tokens_per_day=1_000_000)
    event = await replies.send_message(alice, None, "count /words 30")
    async for _ in replies.attach(alice, event["assistant_message"]["id"], "0-0"):
        pass
    entry = await UsageRecord.objects.aget(message_id=event["assistant_message"]["id"])
    windows = quotas.Windows.at(entry.created.timestamp())
    client = sync_client_for(settings.REDIS_URL)
    key = f"{quotas.user_base(alice.pk)}:tok:{windows.day}"
    for _ in range(50):
        used = int(client.get(key) or 0)
        if used == entry.total_tokens:
            break
        await asyncio.sleep(0.05)
    client.close()
    assert used == entry.total_tokens  # not prompt + max output, which was reserved


@pytest.mark.django_db(transaction=True)
def test_a_token_budget_refuses_a_call_it_cannot_cover(alice):
    set_free(tokens_per_day=500, max_output_tokens=1024)  # a reply may write 1,024 tokens: more than the budget
    client = Client()
    client.force_login(alice)
    refused = post_message(client, "hi")
    assert refused.status_code == 429 and refused.json()["error"]["limit"]["name"] == "tokens_per_day"
    assert refused["RateLimit-Limit"] == "500" and refused["RateLimit-Remaining"] == "500"


@pytest.mark.django_db(transaction=True)
def test_a_cost_budget_is_in_cents_in_the_headers_and_in_dollars_in_the_body(alice):
    ChatModel.objects.filter(name="parley-demo").update(output_price_per_million=Decimal(1000))
    set_free(cost_per_month=Decimal("1.00"))  # the demo model's 1,024 tokens at $0.001: more than $1.00
    client = Client()
    client.force_login(alice)
    refused = post_message(client, "hi")
    assert refused.status_code == 429
    limit = refused.json()["error"]["limit"]
    assert (limit["name"], limit["unit"], limit["allowed"], limit["remaining"]) == ("cost_per_month", "usd", 1.0, 1.0)
    assert limit["label"] == "$1.00 of model use a month"
    assert refused["RateLimit-Limit"] == "100" and refused["RateLimit-Remaining"] == "100"
    assert refused["RateLimit-Policy"] == '100;name="cost_per_month";qu="usd-cents"'


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
def test_a_burst_over_two_web_processes_admits_exactly_the_limit(live_factory, alice):
    set_free(requests_per_minute=5, concurrent_replies=None)
    app = live_factory()
    servers = [app.start_daphne(), app.start_daphne()]
    raw = ApiToken.issue(alice, "burst")[1]
    headers = {"Authorization": f"Bearer {raw}"}
    conversations = [httpx.post(f"{servers[0].url}/api/conversations/", json={}, headers=headers).json()["id"] for _ in range(20)]

    def send(index: int) -> int:
        url = f"{servers[index % 2].url}/api/conversations/{conversations[index]}/messages"
        return httpx.post(url, json={"content": "burst /words 1"}, headers=headers, timeout=20).status_code

    with ThreadPoolExecutor(20) as pool:
        statuses = list(pool.map(send, range(20)))
    assert statuses.count(201) == 5 and statuses.count(429) == 15, statuses
    assert Message.objects.filter(role="user", conversation__owner=alice).count() == 5


@pytest.mark.django_db(transaction=True)
def test_a_title_call_spends_from_the_budget_and_is_skipped_when_it_is_spent(alice, settings):
    from accounts.plans import forget_cached_limits
    from chat.history import message_tokens
    from chat.models import Conversation
    from chat.titles import PROMPT, TITLE_MAX_TOKENS, generate_title
    from tests.fakes import Scenario
    from tests.fakes.openai_server import OpenAIFake

    async def title_for(model, question):
        conversation = await Conversation.objects.acreate(owner=alice, model=model)
        await conversation.messages.acreate(role="user", content=question)
        await conversation.messages.acreate(role="assistant", content="Sure.")
        return await asyncio.to_thread(generate_title, conversation.pk)

    async def titles():
        async with OpenAIFake(Scenario(tokens=4)) as fake:
            settings.OPENAI_BASE_URL = fake.base_url
            settings.OPENAI_API_KEY = "sk-test"
            model = await ChatModel.objects.acreate(name="fake-gpt", label="Fake", provider="openai", base_url=fake.base_url)
            await title_for(model, "Plan a trip to Lisbon")
            spent = (await UsageRecord.objects.aget(kind="title")).total_tokens
            # The next title reserves its one prompt message and 24 tokens: leave room for one token less.
            reserve = message_tokens(PROMPT.format(question="Bake bread at home", answer="Sure.")) + TITLE_MAX_TOKENS
            await Plan.objects.filter(name="Free").aupdate(tokens_per_day=spent + reserve - 1)
            forget_cached_limits()  # plan edits reach a running process within PARLEY_LIMITS_CACHE_SECONDS
            second = await title_for(model, "Bake bread at home")
            return second, len(fake.requests)

    set_free(requests_per_minute=1, concurrent_replies=1)  # titles count toward neither
    second, calls = asyncio.run(titles())
    assert calls == 1  # the second title never reached the provider
    assert second == "Bake bread at home"  # it fell back to the question's words
    assert UsageRecord.objects.filter(kind="title").count() == 1


@pytest.mark.django_db(transaction=True)
def test_the_usage_endpoint_reports_what_is_left_of_each_limit(alice):
    set_free(requests_per_minute=5, requests_per_day=100, tokens_per_day=None, tokens_per_month=None)
    client = Client()
    assert client.get("/api/usage/").status_code == 401
    client.force_login(alice)
    assert client.post("/api/usage/").status_code == 405
    assert post_message(client, "count /words 3").status_code == 201
    usage = client.get("/api/usage/").json()
    by_name = {a["name"]: a for a in usage["allowances"]}
    assert usage["plan"] == "Free" and usage["suspended"] is False
    assert set(by_name) == {"requests_per_minute", "requests_per_day", "cost_per_month"}  # the limited ones only
    assert (by_name["requests_per_day"]["used"], by_name["requests_per_day"]["allowed"]) == (1, 100)
    assert by_name["requests_per_minute"]["label"] == "5 messages a minute"
    assert 0 < by_name["requests_per_minute"]["resets_in"] <= 60
    assert by_name["cost_per_month"]["label"] == "$2.00 of model use a month"


@pytest.mark.django_db(transaction=True)
def test_without_redis_a_send_is_refused_clearly_and_stores_nothing(alice, monkeypatch):
    from parley.embedded_redis import free_port

    dead = redis.Redis(port=free_port(), socket_connect_timeout=0.2, socket_timeout=0.2)
    monkeypatch.setattr(quotas, "client", lambda: dead)
    client = Client()
    client.force_login(alice)
    before = Message.objects.count()
    refused = post_message(client, "hello")
    assert refused.status_code == 503 and refused["Retry-After"] == "5"
    assert refused.json()["error"] == {
        "code": "busy", "text": "Usage limits cannot be checked right now. Try again in a few seconds.", "retry_after": 5.0,
    }
    assert Message.objects.count() == before
