"""Retries before the first token (resilience/attempts.py): the provider's failures are tried again
with backoff, `retry-after` honoured up to its cap; once text has reached anyone, a failure ends the
reply as it is. Every attempt has its ledger row, and only what a provider produced is billed."""

import asyncio
import dataclasses
import time
from decimal import Decimal

import pytest
from channels.db import database_sync_to_async

import providers
from billing.models import UsageRecord
from chat.actions import create_conversation
from chat.models import ChatModel, Message
from chat.replies import send_message, stop_message
from tests.fakes import Scenario, expected_text
from tests.fakes.anthropic_server import AnthropicFake
from tests.fakes.openai_server import OpenAIFake
from tests.helpers import reply_events

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _quick_retries(settings):
    settings.PARLEY_RETRY_ATTEMPTS = 3
    settings.PARLEY_RETRY_BASE_SECONDS = 0.05
    settings.PARLEY_RETRY_MAX_BACKOFF_SECONDS = 0.2
    settings.PARLEY_RETRY_AFTER_CAP_SECONDS = 2.0
    settings.OPENAI_API_KEY = "sk-test"
    settings.ANTHROPIC_API_KEY = "sk-ant-test"


@pytest.fixture
async def openai_fake(settings):
    async with OpenAIFake(Scenario(tokens=20)) as fake:
        settings.OPENAI_BASE_URL = fake.base_url
        yield fake


async def priced_model(fake, name: str = "fake-gpt", provider: str = "openai", **fields) -> ChatModel:
    return await ChatModel.objects.acreate(
        name=name, label=name.title(), provider=provider, base_url=fake.base_url,
        input_price_per_million=Decimal(1), output_price_per_million=Decimal(2), **fields,
    )


async def run_reply(user, model: ChatModel, text: str = "Hi there") -> tuple[list[dict], Message]:
    # Titled already: no title task, which a live worker of the session could run against this
    # test's fakes after they are gone (and count failures in their breakers).
    conversation = await database_sync_to_async(create_conversation)(user, model.name, title="Resilience")
    event = await send_message(user, conversation.pk, text, model.name)
    seen = await reply_events(user, event["assistant_message"]["id"])
    return seen, await Message.objects.aget(pk=event["assistant_message"]["id"])


def rows_of(message: Message) -> list[UsageRecord]:
    return list(UsageRecord.objects.filter(message=message).order_by("attempt"))


def text_of(seen: list[dict]) -> str:
    return "".join(event["text"] for event in seen if event["type"] == "delta")


@pytest.mark.parametrize(
    ("scenario", "code"),
    [
        (Scenario(kind="rate_limited", retry_after="0.1", times=1), "rate_limited"),
        (Scenario(kind="rate_limited", retry_after="", times=2), "rate_limited"),
        (Scenario(kind="server_error", times=1), "provider_unavailable"),
        (Scenario(kind="status", status=503, times=2), "overloaded"),
        (Scenario(kind="cut", after=0, times=1), "provider_unavailable"),
        (Scenario(kind="malformed", after=0, times=1), "provider_unavailable"),
    ],
    ids=["429-retry-after", "429-no-retry-after", "500", "503", "cut-before-text", "malformed-before-text"],
)
async def test_a_failure_before_the_first_token_is_retried_and_billed_once(alice, openai_fake, scenario, code):
    openai_fake.scenario = dataclasses.replace(scenario, tokens=20)
    model = await priced_model(openai_fake)
    seen, reply = await run_reply(alice, model)
    assert seen[-1]["type"] == "done" and text_of(seen) == expected_text(20)
    failures = scenario.times
    assert len(openai_fake.replies) == failures + 1
    rows = await asyncio.to_thread(rows_of, reply)
    assert [row.attempt for row in rows] == list(range(1, failures + 2))
    for failed in rows[:-1]:
        assert (failed.outcome, failed.error_code, failed.total_tokens, failed.cost_usd) == ("failed", code, 0, 0)
    assert rows[-1].outcome == "complete" and rows[-1].completion_tokens == 20 and rows[-1].cost_usd > 0
    assert reply.routing["attempts"] == [
        {"attempt": n, "model": "fake-gpt", "code": code, "ms": reply.routing["attempts"][n - 1]["ms"]} for n in range(1, failures + 1)
    ]
    assert reply.completion_tokens == 20 and reply.status == "complete"


async def test_retry_after_is_waited_for(alice, openai_fake):
    openai_fake.scenario = Scenario(kind="rate_limited", retry_after="0.6", times=1, tokens=5)
    model = await priced_model(openai_fake)
    began = time.monotonic()
    seen, _ = await run_reply(alice, model)
    assert seen[-1]["type"] == "done"
    assert time.monotonic() - began >= 0.6


async def test_a_retry_after_beyond_the_cap_ends_the_reply_with_the_hint(alice, openai_fake):
    openai_fake.scenario = Scenario(kind="rate_limited", retry_after="30")
    model = await priced_model(openai_fake)
    began = time.monotonic()
    seen, reply = await run_reply(alice, model)
    assert time.monotonic() - began < 5
    assert seen[-1]["type"] == "error" and seen[-1]["code"] == "rate_limited" and seen[-1]["retry_after"] == 30
    assert len(openai_fake.replies) == 1
    rows = await asyncio.to_thread(rows_of, reply)
    assert [(row.attempt, row.outcome, row.cost_usd) for row in rows] == [(1, "failed", 0)]


async def test_retries_stop_after_the_configured_attempts(alice, openai_fake, settings):
    settings.PARLEY_RETRY_ATTEMPTS = 2
    openai_fake.scenario = Scenario(kind="server_error")
    model = await priced_model(openai_fake)
    seen, reply = await run_reply(alice, model)
    assert seen[-1]["type"] == "error" and seen[-1]["code"] == "provider_unavailable"
    assert len(openai_fake.replies) == 2
    rows = await asyncio.to_thread(rows_of, reply)
    assert [(row.attempt, row.outcome, row.total_tokens) for row in rows] == [(1, "failed", 0), (2, "failed", 0)]
    assert reply.status == "failed" and [a["attempt"] for a in reply.routing["attempts"]] == [1, 2]


@pytest.mark.parametrize(("kind", "code"), [("unauthorized", "auth_failed"), ("bad_request", "bad_request")])
async def test_errors_of_the_request_are_not_retried(alice, openai_fake, kind, code):
    openai_fake.scenario = Scenario(kind=kind)
    model = await priced_model(openai_fake)
    seen, reply = await run_reply(alice, model)
    assert seen[-1]["code"] == code and len(openai_fake.replies) == 1
    assert [row.attempt for row in await asyncio.to_thread(rows_of, reply)] == [1]


@pytest.mark.parametrize("kind", ["cut", "malformed", "stall"])
async def test_a_failure_after_text_was_delivered_ends_the_reply_with_its_text(alice, openai_fake, settings, kind):
    settings.PROVIDER_IDLE_TIMEOUT = 0.5
    providers.get_provider.cache_clear()
    try:
        openai_fake.scenario = Scenario(kind=kind, after=4, tokens=20, delay=3)
        model = await priced_model(openai_fake)
        seen, reply = await run_reply(alice, model)
    finally:
        providers.get_provider.cache_clear()
    assert seen[-1]["type"] == "error" and seen[-1]["status"] == "failed"
    assert len(openai_fake.replies) == 1, "never re-run once text reached the reader"
    assert text_of(seen) == expected_text(4) == reply.content
    rows = await asyncio.to_thread(rows_of, reply)
    assert len(rows) == 1 and rows[0].completion_tokens > 0, "the text the provider produced is billed"


async def test_a_hang_before_the_first_token_is_retried(alice, openai_fake, settings):
    settings.PROVIDER_FIRST_TOKEN_TIMEOUT = 0.4
    providers.get_provider.cache_clear()
    try:
        openai_fake.scenario = Scenario(kind="slow_first", delay=3, times=1, tokens=6)
        model = await priced_model(openai_fake)
        seen, reply = await run_reply(alice, model)
    finally:
        providers.get_provider.cache_clear()
    assert seen[-1]["type"] == "done" and text_of(seen) == expected_text(6)
    assert [(a["attempt"], a["code"]) for a in reply.routing["attempts"]] == [(1, "timeout")]


async def test_anthropic_529_is_retried(alice, settings):
    async with AnthropicFake(Scenario(kind="overloaded", times=1, tokens=7)) as fake:
        model = await priced_model(fake, "fake-claude", provider="anthropic")
        seen, reply = await run_reply(alice, model)
    assert seen[-1]["type"] == "done" and text_of(seen) == expected_text(7)
    assert reply.routing["attempts"][0]["code"] == "overloaded"


async def test_stop_during_the_backoff_stops_at_once_and_tries_no_more(alice, openai_fake, settings):
    settings.PARLEY_RETRY_BASE_SECONDS = 5
    settings.PARLEY_RETRY_MAX_BACKOFF_SECONDS = 5
    openai_fake.scenario = Scenario(kind="rate_limited", retry_after="1.5")
    model = await priced_model(openai_fake)
    conversation = await database_sync_to_async(create_conversation)(alice, model.name, title="Resilience")
    event = await send_message(alice, conversation.pk, "Hi there", model.name)
    reply_id = event["assistant_message"]["id"]
    while not openai_fake.replies:
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.2)
    began = time.monotonic()
    await stop_message(alice, reply_id)
    seen = await reply_events(alice, reply_id)
    assert time.monotonic() - began < 1.0
    assert seen[-1]["type"] == "done" and seen[-1]["status"] == "stopped"
    await asyncio.sleep(1.6)
    assert len(openai_fake.replies) == 1
