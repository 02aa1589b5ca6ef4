"""Failover chains (resilience/attempts.py, chat.models.FailoverLink): when a model fails before its
first token with a failure that is not the request's fault, the next model of its chain answers,
admitted at its own price; the reply says which model answered and why, and the ledger bills only
what was produced."""

import asyncio
import time
from decimal import Decimal

import pytest
from channels.db import database_sync_to_async

import providers
from accounts.models import Plan
from billing import admission
from billing.models import UsageRecord
from chat.actions import create_conversation
from chat.models import ChatModel, FailoverLink, Message
from chat.replies import send_message
from resilience import chains
from tests.fakes import Scenario, expected_text
from tests.fakes.anthropic_server import AnthropicFake
from tests.fakes.openai_server import OpenAIFake
from tests.helpers import reply_events

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _quick_retries(settings):
    settings.PARLEY_RETRY_ATTEMPTS = 2
    settings.PARLEY_RETRY_BASE_SECONDS = 0.02
    settings.PARLEY_RETRY_MAX_BACKOFF_SECONDS = 0.05
    settings.OPENAI_API_KEY = "sk-test"
    settings.ANTHROPIC_API_KEY = "sk-ant-test"
    chains.forget()
    yield
    chains.forget()


@pytest.fixture
async def primary(settings):
    async with OpenAIFake(Scenario(tokens=10)) as fake:
        settings.OPENAI_BASE_URL = fake.base_url
        yield fake


@pytest.fixture
async def secondary():
    async with AnthropicFake(Scenario(tokens=12)) as fake:
        yield fake


async def model_at(fake, name: str, provider: str, price: str, **fields) -> ChatModel:
    return await ChatModel.objects.acreate(
        name=name, label=name.upper(), provider=provider, base_url=fake.base_url,
        input_price_per_million=Decimal(price), output_price_per_million=Decimal(price), **fields,
    )


async def chain(model: ChatModel, *fallbacks: ChatModel) -> None:
    for position, fallback in enumerate(fallbacks, 1):
        await FailoverLink.objects.acreate(model=model, fallback=fallback, position=position)


async def run_reply(user, model: ChatModel, text: str = "Hi there") -> tuple[list[dict], Message]:
    # Titled already: no title task, which a live worker of the session could run against this
    # test's fakes after they are gone (and count failures in their breakers).
    conversation = await database_sync_to_async(create_conversation)(user, model.name, title="Resilience")
    event = await send_message(user, conversation.pk, text, model.name)
    seen = await reply_events(user, event["assistant_message"]["id"])
    return seen, await Message.objects.aget(pk=event["assistant_message"]["id"])


def rows_of(message: Message) -> list[tuple]:
    return [
        (row.attempt, row.model, row.outcome, row.error_code, row.total_tokens, row.cost_usd)
        for row in UsageRecord.objects.filter(message=message).order_by("attempt")
    ]


def text_of(seen: list[dict]) -> str:
    return "".join(event["text"] for event in seen if event["type"] == "delta")


async def test_the_next_model_answers_when_the_first_keeps_failing(alice, primary, secondary):
    primary.scenario = Scenario(kind="server_error")
    first = await model_at(primary, "first", "openai", "1")
    second = await model_at(secondary, "second", "anthropic", "3")
    await chain(first, second)
    admission.forget_seen_costs()
    cost_before = await asyncio.to_thread(admission.cost_used, alice.pk)
    seen, reply = await run_reply(alice, first)
    assert seen[-1]["type"] == "done" and text_of(seen) == expected_text(12) == reply.content
    assert len(primary.replies) == 2 and len(secondary.replies) == 1
    assert (reply.provider, reply.model) == ("anthropic", "second")
    assert seen[-1]["model"] == "second"
    assert reply.routing["failover"] == {
        "from": "first", "from_label": "FIRST", "to": "second", "to_label": "SECOND",
        "why": "its provider could not be reached",
    }
    assert reply.notice.startswith("Answered by SECOND because FIRST was unavailable")
    assert seen[-1]["notice"] == reply.notice
    rows = await asyncio.to_thread(rows_of, reply)
    assert [row[:4] for row in rows] == [
        (1, "first", "failed", "provider_unavailable"), (2, "first", "failed", "provider_unavailable"),
        (3, "second", "complete", ""),
    ]
    assert rows[0][4:] == rows[1][4:] == (0, 0)
    billed = rows[2]
    prompt, completion = reply.prompt_tokens, reply.completion_tokens
    assert billed[4] == prompt + completion and billed[5] == Decimal(3) * (prompt + completion) / 1_000_000
    # The user's month is charged what the second model produced, nothing for the first's attempts.
    admission.forget_seen_costs()
    assert await asyncio.to_thread(admission.cost_used, alice.pk) - cost_before == billed[5]


async def test_the_page_reads_the_answering_model_after_a_reload(alice, primary, secondary):
    primary.scenario = Scenario(kind="status", status=503)
    first = await model_at(primary, "first", "openai", "1")
    second = await model_at(secondary, "second", "anthropic", "3")
    await chain(first, second)
    _, reply = await run_reply(alice, first)
    again = await reply_events(alice, reply.pk)  # the stored reply: its final event rebuilt
    assert again[-1]["model"] == "second" and again[-1]["routing"]["failover"]["why"] == "its provider was overloaded"


async def test_a_hang_fails_over_at_once_without_waiting_out_another_timeout(alice, primary, secondary, settings):
    settings.PROVIDER_FIRST_TOKEN_TIMEOUT = 0.5
    providers.get_provider.cache_clear()
    try:
        primary.scenario = Scenario(kind="slow_first", delay=5)
        first = await model_at(primary, "first", "openai", "1")
        second = await model_at(secondary, "second", "anthropic", "1")
        await chain(first, second)
        began = time.monotonic()
        seen, reply = await run_reply(alice, first)
        took = time.monotonic() - began
    finally:
        providers.get_provider.cache_clear()
    assert seen[-1]["type"] == "done" and reply.model == "second"
    assert len(primary.replies) == 1, "a model that hung is not asked again while another can answer"
    assert took < 0.5 + 1.0
    assert reply.routing["failover"]["why"] == "it did not start answering in time"


@pytest.mark.parametrize(("kind", "code"), [("unauthorized", "auth_failed"), ("bad_request", "bad_request")])
async def test_errors_of_the_request_never_fail_over(alice, primary, secondary, kind, code):
    primary.scenario = Scenario(kind=kind)
    first = await model_at(primary, "first", "openai", "1")
    second = await model_at(secondary, "second", "anthropic", "1")
    await chain(first, second)
    seen, reply = await run_reply(alice, first)
    assert seen[-1]["type"] == "error" and seen[-1]["code"] == code
    assert not secondary.replies and reply.model == "first" and "failover" not in reply.routing


async def test_a_conversation_too_long_goes_only_to_a_model_with_a_larger_window(alice, primary, secondary):
    primary.scenario = Scenario(kind="context_length")
    first = await model_at(primary, "first", "openai", "1", context_window=8000)
    async with AnthropicFake(Scenario(tokens=3)) as small_fake:
        smaller = await model_at(small_fake, "smaller", "anthropic", "1", context_window=4000)
        larger = await model_at(secondary, "larger", "anthropic", "1", context_window=200_000)
        await chain(first, smaller, larger)
        seen, reply = await run_reply(alice, first)
        assert not small_fake.replies
    assert seen[-1]["type"] == "done" and reply.model == "larger"
    assert len(primary.replies) == 1, "a request too long is not retried on the same model"
    assert reply.routing["failover"]["why"] == "the conversation is too long for it"


async def test_a_model_the_plan_does_not_allow_is_passed_over(alice, primary, secondary):
    primary.scenario = Scenario(kind="server_error")
    first = await model_at(primary, "first", "openai", "1")
    async with AnthropicFake(Scenario(tokens=3)) as forbidden_fake:
        forbidden = await model_at(forbidden_fake, "forbidden", "anthropic", "1")
        allowed = await model_at(secondary, "allowed", "anthropic", "1")
        await chain(first, forbidden, allowed)
        plan = await Plan.objects.aget(name="Free")
        await plan.allowed_models.aset([first, allowed])
        seen, reply = await run_reply(alice, first)
        assert not forbidden_fake.replies
    assert seen[-1]["type"] == "done" and reply.model == "allowed"


async def test_when_every_model_fails_the_reply_fails_saying_what_was_tried(alice, primary, secondary):
    primary.scenario = Scenario(kind="server_error")
    secondary.scenario = Scenario(kind="overloaded")
    first = await model_at(primary, "first", "openai", "1")
    second = await model_at(secondary, "second", "anthropic", "1")
    await chain(first, second)
    admission.forget_seen_costs()
    cost_before = await asyncio.to_thread(admission.cost_used, alice.pk)
    seen, reply = await run_reply(alice, first)
    assert seen[-1]["type"] == "error" and seen[-1]["code"] == "overloaded"
    assert reply.status == "failed" and reply.notice.startswith("SECOND was tried because FIRST was unavailable")
    rows = await asyncio.to_thread(rows_of, reply)
    assert [(row[0], row[1], row[2]) for row in rows] == [
        (1, "first", "failed"), (2, "first", "failed"), (3, "second", "failed"), (4, "second", "failed"),
    ]
    assert all(row[4:] == (0, 0) for row in rows)
    admission.forget_seen_costs()
    assert await asyncio.to_thread(admission.cost_used, alice.pk) - cost_before == 0


def _change_form(model: ChatModel, links: list[tuple[int, int]]) -> dict[str, object]:
    data: dict[str, object] = {
        "name": model.name, "label": model.label, "provider": model.provider, "endpoint": "", "remote_name": "",
        "base_url": model.base_url, "context_window": model.context_window, "max_output_tokens": model.max_output_tokens,
        "input_price_per_million": "1", "output_price_per_million": "1", "enabled": "on", "sort_order": 100,
        "temperature": "0", "cache_responses": "on",
        "failover_links-TOTAL_FORMS": len(links), "failover_links-INITIAL_FORMS": 0,
        "failover_links-MIN_NUM_FORMS": 0, "failover_links-MAX_NUM_FORMS": 1000,
    }
    for index, (fallback, position) in enumerate(links):
        data[f"failover_links-{index}-fallback"] = fallback
        data[f"failover_links-{index}-position"] = position
    return data


@pytest.mark.django_db(transaction=False)
def test_admins_edit_a_models_failover_chain_and_cache_in_its_page(admin_client):
    first = ChatModel.objects.create(name="first", label="First", provider="demo", base_url="")
    second = ChatModel.objects.create(name="second", label="Second", provider="demo", base_url="")
    third = ChatModel.objects.create(name="third", label="Third", provider="demo", base_url="")
    url = f"/admin/chat/chatmodel/{first.pk}/change/"
    assert "failover chain" in admin_client.get(url).content.decode().lower()
    response = admin_client.post(url, _change_form(first, [(third.pk, 2), (second.pk, 1)]))
    assert response.status_code == 302, response.content.decode()[:2000]
    assert chains.chain_of(first) == (second, third)
    first.refresh_from_db()
    assert first.cache_responses and first.temperature == 0


@pytest.mark.django_db(transaction=False)
def test_a_model_cannot_fail_over_to_itself(admin_client):
    first = ChatModel.objects.create(name="first", label="First", provider="demo", base_url="")
    response = admin_client.post(f"/admin/chat/chatmodel/{first.pk}/change/", _change_form(first, [(first.pk, 1)]))
    assert response.status_code == 200
    assert "cannot be its own failover" in response.content.decode()
    assert not FailoverLink.objects.exists()


async def test_an_open_breaker_sends_replies_down_the_chain_until_its_probe_succeeds(alice, primary, secondary, settings):
    settings.PARLEY_RETRY_ATTEMPTS = 1
    settings.PARLEY_BREAKER_FAILURES, settings.PARLEY_BREAKER_WINDOW_SECONDS = 2, 30
    settings.PARLEY_BREAKER_COOLDOWN_SECONDS = 1
    primary.scenario = Scenario(kind="server_error")
    first = await model_at(primary, "first", "openai", "1")
    second = await model_at(secondary, "second", "anthropic", "1")
    await chain(first, second)
    for _ in range(2):  # two failures open the breaker
        _, reply = await run_reply(alice, first)
        assert reply.model == "second"
    assert len(primary.replies) == 2
    seen, reply = await run_reply(alice, first)
    assert len(primary.replies) == 2, "an open breaker refuses at once: the model is not called"
    assert reply.model == "second" and reply.routing["failover"]["why"] == "its provider has been failing (circuit breaker open)"
    assert "attempts" not in reply.routing
    assert await asyncio.to_thread(rows_of, reply) == [(1, "second", "complete", "", reply.prompt_tokens + reply.completion_tokens,
                                                         Decimal(reply.prompt_tokens + reply.completion_tokens) / 1_000_000)]
    await asyncio.sleep(1.1)  # the cool-down: the next call is the probe, and the model has recovered
    primary.scenario = Scenario(tokens=10)
    seen, reply = await run_reply(alice, first)
    assert reply.model == "first" and text_of(seen) == expected_text(10) and len(primary.replies) == 3
    seen, reply = await run_reply(alice, first)
    assert reply.model == "first" and len(primary.replies) == 4, "the probe's success closed the breaker"


@pytest.mark.django_db(transaction=False)
def test_the_ledger_in_admin_shows_each_attempt_and_the_sites_own_rows(admin_client, django_user_model):
    carol = django_user_model.objects.create_user("carol")
    UsageRecord.objects.create(user=carol, kind="reply", provider="openai", model="first", outcome="failed", attempt=1,
                               error_code="overloaded")
    UsageRecord.objects.create(user=carol, kind="reply", provider="anthropic", model="second", outcome="complete", attempt=2)
    UsageRecord.objects.create(user=None, kind="shadow", provider="openai", model="shadowing", outcome="complete")
    page = admin_client.get("/admin/billing/usagerecord/?attempt=2").content.decode()
    assert '<td class="field-model">second</td>' in page and '<td class="field-model">first</td>' not in page
    page = admin_client.get("/admin/billing/usagerecord/").content.decode()
    assert "the site (shadow run)" in page and '<td class="field-attempt">2</td>' in page
