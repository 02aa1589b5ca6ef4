"""A reply ends at the output it reserved even when the provider ignores max_tokens; what the
provider reports beyond it is billed, recorded as an overspend and alerted, never silent."""

from decimal import Decimal

import pytest

from accounts.models import Plan
from billing import alerts
from billing.models import UsageRecord
from chat.models import ChatModel, Message
from chat.replies import send_message
from providers.anthropic_messages import AnthropicProvider
from providers.base import ChatRequest, OutputMeter, TextDelta, collect, estimate_tokens
from providers.openai_chat import OpenAIProvider
from tests.fakes import Scenario, expected_text
from tests.fakes.anthropic_server import AnthropicFake
from tests.fakes.openai_server import OpenAIFake
from tests.helpers import reply_events


def request(limit: int) -> ChatRequest:
    return ChatRequest(model="m", messages=[{"role": "user", "content": "go on"}], max_output_tokens=limit)


async def cut_reply(fake_class, provider_class, limit: int):
    async with fake_class(Scenario(tokens=600, ignore_max_tokens=1, batch=7)) as fake:
        provider = provider_class(api_key="sk-test", base_url=fake.base_url)
        try:
            reply = await collect(provider, request(limit))
        finally:
            await provider.aclose()
        assert fake.last.json["max_tokens"] == limit  # asked, and ignored
    assert reply.finish is not None and reply.finish.reason == "length"
    assert reply.error is None and reply.usage is None  # cut before the provider's own count arrived
    return reply


async def test_an_openai_compatible_server_that_ignores_max_tokens_is_cut_at_the_limit():
    reply = await cut_reply(OpenAIFake, OpenAIProvider, 50)
    assert reply.text == expected_text(50)  # a chunk a token: exactly the reserved output


async def test_an_anthropic_compatible_server_that_ignores_max_tokens_is_cut_near_the_limit():
    reply = await cut_reply(AnthropicFake, AnthropicProvider, 50)
    assert expected_text(600).startswith(reply.text)
    assert expected_text(50) in reply.text  # never short of what an obedient server would write
    assert estimate_tokens(reply.text) <= 50 + 50 // 2 + 8


async def test_an_obedient_provider_keeps_its_own_finish_and_usage():
    async with OpenAIFake(Scenario(tokens=30)) as fake:
        provider = OpenAIProvider(api_key="sk-test", base_url=fake.base_url)
        try:
            reply = await collect(provider, request(100))
        finally:
            await provider.aclose()
    assert estimate_tokens(expected_text(30)) < 100
    assert reply.text == expected_text(30)
    assert reply.usage is not None and reply.usage.completion_tokens == 30
    assert reply.finish is not None and reply.finish.reason == "stop"


def test_the_meter_counts_chunks_where_they_are_tokens_and_keeps_the_share_that_fits():
    meter = OutputMeter(5, chunks_are_tokens=True)
    first = TextDelta("abcdefgh", ("ab", "cd", "ef", "gh"))
    assert meter.take(first) is first
    rest = meter.take(TextDelta("ijklmnop", ("i", "jklm", "no", "p")))
    assert (rest.text, rest.pieces) == ("i", 1)  # room for one more chunk of four
    assert meter.take(TextDelta("q")).text == ""
    exact = OutputMeter(3, chunks_are_tokens=True)
    assert [exact.take(TextDelta(t)).text for t in ("a", "b", "c")] == ["a", "b", "c"]  # reaching the limit is no cut


def test_the_meter_estimates_other_text_with_a_margin():
    meter = OutputMeter(40, chunks_are_tokens=False)  # cuts past 40 + 20 + 8 = 68 estimated tokens
    assert meter.take(TextDelta("a" * 260)).text == "a" * 260  # 65 tokens
    cut = meter.take(TextDelta("b" * 40))
    assert cut.text == "b" * 12 and estimate_tokens("a" * 260 + cut.text) == 68
    wide = OutputMeter(4, chunks_are_tokens=False)
    kept = wide.take(TextDelta("漢字" * 20)).text  # beyond ASCII, more than a token a character
    assert estimate_tokens(kept) <= 14 < estimate_tokens(("漢字" * 20)[: len(kept) + 1]) and kept


@pytest.fixture
async def priced_fake(settings):
    """An OpenAI-compatible server that streams 600 tokens whatever it is asked, priced like a real model."""
    async with OpenAIFake(Scenario(tokens=600, ignore_max_tokens=1, rate=2000)) as fake:
        settings.OPENAI_BASE_URL = fake.base_url
        settings.OPENAI_API_KEY = "sk-test"
        settings.PROVIDER_MAX_RETRIES = 0
        model = await ChatModel.objects.acreate(
            name="runaway", label="Runaway", provider="openai", base_url=fake.base_url, max_output_tokens=4096,
            input_price_per_million=Decimal("1.00"), output_price_per_million=Decimal("2.00"),
        )
        await Plan.objects.filter(name="Free").aupdate(max_output_tokens=200)
        yield fake, model


@pytest.mark.django_db(transaction=True)
async def test_a_runaway_reply_ends_complete_with_length_and_bills_no_more_than_it_reserved(alice, priced_fake):
    fake, model = priced_fake
    event = await send_message(alice, None, "write forever", model.name)
    reply_id = event["assistant_message"]["id"]
    final = (await reply_events(alice, reply_id))[-1]
    assert final["type"] == "done" and final["status"] == "complete" and final["finish_reason"] == "length"
    stored = await Message.objects.aget(pk=reply_id)
    assert stored.status == "complete" and expected_text(200).startswith(stored.content) and stored.content
    entry = await UsageRecord.objects.aget(message_id=reply_id)
    assert entry.estimated and entry.completion_tokens <= 200 and entry.over_reservation_tokens == 0
    reserved = (Decimal(entry.prompt_tokens) * 1 + Decimal(200) * 2) / 1_000_000
    assert 0 < entry.cost_usd <= reserved


@pytest.mark.django_db(transaction=True)
async def test_output_the_provider_bills_beyond_the_reservation_is_recorded_and_alerted(
    alice, priced_fake, settings, mailoutbox, django_user_model
):
    fake, model = priced_fake
    await django_user_model.objects.acreate(username="root", email="root@example.com", is_superuser=True)
    settings.PARLEY_ALERT_EMAILS = []
    fake.scenario = Scenario(tokens=20, hidden_tokens=900)  # a reasoning model's unseen thinking, billed
    event = await send_message(alice, None, "think hard", model.name)
    reply_id = event["assistant_message"]["id"]
    final = (await reply_events(alice, reply_id))[-1]
    assert final["status"] == "complete"
    entry = await UsageRecord.objects.aget(message_id=reply_id)
    assert (entry.completion_tokens, entry.estimated, entry.over_reservation_tokens) == (920, False, 720)
    assert entry.cost_usd == (Decimal(entry.prompt_tokens) * 1 + Decimal(920) * 2) / 1_000_000  # billed as charged
    # The reply asked the worker for the email; a worker of the test session may have sent it already.
    first, again = await alerts_sent(entry.pk)
    assert again is False and len(mailoutbox) == int(first)
    assert (await UsageRecord.objects.aget(pk=entry.pk)).overspend_alerted
    # The email itself, for a row no worker was asked about: one, however often the task runs.
    twin = await UsageRecord.objects.acreate(
        user=alice, kind="reply", provider="openai", model="runaway", prompt_tokens=10, completion_tokens=920,
        over_reservation_tokens=720, cost_usd=Decimal("0.002"), outcome="complete",
    )
    mailoutbox.clear()
    assert await alerts_sent(twin.pk) == [True, False]
    assert len(mailoutbox) == 1 and mailoutbox[0].to == ["root@example.com"]
    assert "920" in mailoutbox[0].body and "720 more" in mailoutbox[0].body


async def alerts_sent(record_id: int) -> list[bool]:
    from asgiref.sync import sync_to_async

    return [await sync_to_async(alerts.send_overspend_alert)(record_id) for _ in range(2)]


@pytest.mark.django_db(transaction=True)
async def test_a_provider_refusal_before_any_text_costs_nothing_and_keeps_its_error(alice, priced_fake):
    fake, model = priced_fake
    fake.scenario = Scenario(kind="status", status=503)
    event = await send_message(alice, None, "hello?", model.name)
    reply_id = event["assistant_message"]["id"]
    final = (await reply_events(alice, reply_id))[-1]
    assert final["type"] == "error" and final["status"] == "failed"
    # Each attempt (the reply was retried before its first token) has its row, and none is billed.
    entries = [entry async for entry in UsageRecord.objects.filter(message_id=reply_id).order_by("attempt")]
    assert [entry.attempt for entry in entries] == list(range(1, len(entries) + 1)) and entries
    for entry in entries:
        assert (entry.outcome, entry.prompt_tokens, entry.completion_tokens, entry.cost_usd) == ("failed", 0, 0, Decimal(0))
        assert entry.error_code == final["code"] and entry.error_code


@pytest.mark.django_db(transaction=True)
async def test_a_failure_after_some_text_is_billed_for_what_was_produced(alice, priced_fake):
    fake, model = priced_fake
    fake.scenario = Scenario(kind="cut", tokens=40, after=10)
    event = await send_message(alice, None, "hello?", model.name)
    reply_id = event["assistant_message"]["id"]
    final = (await reply_events(alice, reply_id))[-1]
    assert final["status"] == "failed"
    entry = await UsageRecord.objects.aget(message_id=reply_id)
    assert entry.completion_tokens > 0 and entry.prompt_tokens > 0 and entry.cost_usd > 0
    assert entry.error_code == final["code"]
