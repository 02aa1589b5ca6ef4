"""The ledger never bills a model at another model's price: a model without a price is billed at 0
and flagged until an admin sets one; a priced model bills at exactly its own price; list prices
apply only to the official APIs' models."""

from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone

from billing.models import UsageRecord
from chat import discovery
from chat.models import ChatModel
from chat.replies import send_message
from providers.endpoints import Endpoint
from providers.listing import Listed
from tests.fakes import Scenario
from tests.fakes.openai_server import OpenAIFake
from tests.helpers import reply_events

pytestmark = pytest.mark.django_db(transaction=True)

MILLION = Decimal(1_000_000)


@pytest.fixture
async def local_server(transactional_db, settings):
    """A llama.cpp-style server as the default OpenAI endpoint, listing a model of an official name."""
    async with OpenAIFake(Scenario(tokens=30), models=["gpt-4o-mini", "local-llama", "local-qwen"]) as fake:
        settings.OPENAI_BASE_URL, settings.OPENAI_API_KEY = fake.base_url, ""
        settings.ANTHROPIC_API_KEY, settings.PARLEY_OPENAI_ENDPOINTS, settings.PARLEY_ANTHROPIC_ENDPOINTS = "", [], []
        settings.PROVIDER_MAX_RETRIES = 0
        yield fake


async def reply_and_its_ledger_row(user, model_name: str) -> UsageRecord:
    event = await send_message(user, None, "How much does this cost?", model_name)
    seen = await reply_events(user, event["assistant_message"]["id"])
    assert seen[-1]["type"] == "done"
    return await UsageRecord.objects.aget(message_id=event["assistant_message"]["id"])


def own_price(row: UsageRecord, model: ChatModel) -> Decimal:
    return (row.prompt_tokens * model.input_price_per_million + row.completion_tokens * model.output_price_per_million) / MILLION


async def test_a_model_without_a_price_is_billed_zero_and_flagged_until_an_admin_prices_it(alice, local_server):
    await sync_to_async(discovery.refresh)()
    row = await reply_and_its_ledger_row(alice, "local-llama")
    assert row.completion_tokens == 30 and row.prompt_tokens > 0
    assert row.cost_usd == 0 and row.price_unknown and (row.model, row.endpoint) == ("local-llama", "openai")

    await ChatModel.objects.filter(name="local-llama").aupdate(
        input_price_per_million=Decimal("2.50"), output_price_per_million=Decimal("10.00")
    )
    model = await ChatModel.objects.aget(name="local-llama")
    row = await reply_and_its_ledger_row(alice, "local-llama")
    assert not row.price_unknown and row.cost_usd == own_price(row, model) and row.cost_usd > 0
    await sync_to_async(discovery.refresh)()  # a refresh keeps a price an admin set
    await model.arefresh_from_db()
    assert model.input_price_per_million == Decimal("2.50") and model.price_known


async def test_a_local_model_named_like_an_official_one_is_not_billed_at_its_price(alice, local_server):
    # As the catalogue was before discovery: GPT-4o mini seeded with OpenAI's prices (migration 0011).
    await ChatModel.objects.acreate(
        name="gpt-4o-mini", label="GPT-4o mini", provider="openai", endpoint="openai", remote_name="gpt-4o-mini",
        available=False, prices_from_list=True,
        input_price_per_million=Decimal("0.15"), output_price_per_million=Decimal("0.60"),
    )
    await sync_to_async(discovery.refresh)()
    model = await ChatModel.objects.aget(name="gpt-4o-mini")
    assert model.available and not model.price_known and model.label == "gpt-4o-mini"  # the server's name, not OpenAI's
    row = await reply_and_its_ledger_row(alice, "gpt-4o-mini")
    assert row.cost_usd == 0 and row.price_unknown


async def test_each_priced_model_bills_at_exactly_its_own_price(alice, local_server):
    await sync_to_async(discovery.refresh)()
    await ChatModel.objects.filter(name="local-llama").aupdate(
        input_price_per_million=Decimal("1.00"), output_price_per_million=Decimal("2.00")
    )
    await ChatModel.objects.filter(name="local-qwen").aupdate(
        input_price_per_million=Decimal("30.00"), output_price_per_million=Decimal("60.00")
    )
    models = {model.name: model async for model in ChatModel.objects.filter(name__in=["local-llama", "local-qwen"])}
    for name, other in (("local-llama", "local-qwen"), ("local-qwen", "local-llama"), ("local-llama", "local-qwen")):
        row = await reply_and_its_ledger_row(alice, name)
        assert row.model == name and not row.price_unknown
        assert row.cost_usd == own_price(row, models[name]) != own_price(row, models[other])


def test_list_prices_apply_only_to_the_official_apis(db):
    now = timezone.now()
    official = Endpoint("openai", "openai", "https://api.openai.com/v1", "sk")
    discovery.store(official, [Listed("gpt-4o-mini", "gpt-4o-mini"), Listed("gpt-5-nano", "gpt-5-nano")], now)
    mini = ChatModel.objects.get(name="gpt-4o-mini")
    assert (mini.input_price_per_million, mini.output_price_per_million, mini.label) == (Decimal("0.15"), Decimal("0.60"), "GPT-4o mini")
    nano = ChatModel.objects.get(name="gpt-5-nano")
    assert not nano.price_known  # a name not on the list: unknown
    assert mini.sort_order < nano.sort_order  # the models Parley knows come first, and so make the default

    # The same variable pointed at another server: the list's prices (and name) go.
    local = Endpoint("openai", "openai", "http://127.0.0.1:8080/v1", "")
    discovery.store(local, [Listed("gpt-4o-mini", "gpt-4o-mini")], now)
    mini.refresh_from_db()
    assert not mini.price_known and mini.label == "gpt-4o-mini"

    # Back on the official API the list's price returns; a price an admin set is never replaced.
    discovery.store(official, [Listed("gpt-4o-mini", "gpt-4o-mini")], now)
    mini.refresh_from_db()
    assert mini.input_price_per_million == Decimal("0.15") and mini.prices_from_list
    ChatModel.objects.filter(pk=mini.pk).update(input_price_per_million=Decimal("0.20"), prices_from_list=False)
    discovery.store(local, [Listed("gpt-4o-mini", "gpt-4o-mini")], now)
    mini.refresh_from_db()
    assert mini.input_price_per_million == Decimal("0.20") and mini.price_known

    # An Anthropic-style server on an OpenAI endpoint's name list gets no Claude price either.
    lookalike = Endpoint("claude-proxy", "openai", "https://api.openai.com/v1", "")
    discovery.store(lookalike, [Listed("claude-haiku-4-5", "claude-haiku-4-5")], now)
    assert not ChatModel.objects.get(name="claude-proxy/claude-haiku-4-5").price_known


@pytest.mark.django_db
def test_a_reply_whose_process_died_on_a_model_without_a_price_is_charged_zero_and_flagged(
    alice, redis_client, django_capture_on_commit_callbacks
):
    from datetime import timedelta

    from django.conf import settings

    from accounts.plans import limits_for
    from billing import admission, ledger
    from chat.models import Conversation, Message
    from chat.reaper import reap_interrupted

    unpriced = ChatModel.objects.create(name="unpriced-demo", label="Unpriced", provider="demo")
    _, limits = limits_for(alice.pk)
    reservation = admission.reserve(alice.pk, limits, ledger.Pricing.of(None, None), 40, 1024)
    conversation = Conversation.objects.create(owner=alice, model=unpriced)
    reply = Message.objects.create(
        conversation=conversation, role="assistant", status="streaming", content="Twelve chars", provider="demo",
        model="unpriced-demo", generator="dead-generator", quota_claim=reservation.claim(40),
        created=timezone.now() - timedelta(seconds=settings.PARLEY_HEARTBEAT_TTL + 30),
    )
    with django_capture_on_commit_callbacks(execute=True):
        assert reap_interrupted(redis_client) == [reply.pk]
    entry = UsageRecord.objects.get(message=reply)
    assert (entry.outcome, entry.completion_tokens, entry.cost_usd, entry.price_unknown) == ("interrupted", 3, 0, True)
