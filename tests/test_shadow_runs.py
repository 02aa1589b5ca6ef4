"""A shadow run of one reply, in-process against the fake OpenAI server: it is sent exactly what the
real reply was sent (the branch, its files, fitted to the shadow's window), stored with its tokens,
cost and timings, billed to the site alone, never seen by the user, and never made twice."""

import asyncio
import re
import time
from datetime import timedelta
from decimal import Decimal

import pytest
from channels.db import database_sync_to_async
from django.utils import timezone

from billing import admission, quotas
from billing.models import UsageRecord
from chat import presets, replies, uploads
from chat.models import ChatModel, Conversation, Message, PromptPresetVersion
from parley.redis_clients import sync_client, sync_client_for
from shadows.models import ShadowConfig, ShadowRun
from shadows.runner import run_shadow
from streaming.keys import events_key, user_channel
from tests.fakes import Scenario, expected_text
from tests.fakes.openai_server import OpenAIFake
from tests.helpers import reply_events

def without_countdowns(page: str) -> str:
    return re.sub(r'"resets_in": [0-9]+', '"resets_in": _', page)


pytestmark = pytest.mark.django_db(transaction=True)

NOTES = "Budget: 1,200 EUR.\nDue: Friday."


@pytest.fixture
async def served(settings):
    async with OpenAIFake(Scenario(tokens=5)) as fake:
        settings.OPENAI_API_KEY = "sk-test"
        settings.PROVIDER_MAX_RETRIES = 0
        settings.PARLEY_SITE_BUDGET_USD = Decimal("100")
        real = await ChatModel.objects.acreate(
            name="fake-real", label="Real", provider="openai", base_url=fake.base_url,
            input_price_per_million=Decimal("1"), output_price_per_million=Decimal("10"),
        )
        shadow = await ChatModel.objects.acreate(
            name="fake-shadow", label="Shadow", provider="openai", base_url=fake.base_url, max_output_tokens=300,
            input_price_per_million=Decimal("2"), output_price_per_million=Decimal("20"),
        )
        yield fake, real, shadow


async def final(user, event: dict) -> int:
    reply_id = event["assistant_message"]["id"]
    seen = await reply_events(user, reply_id)
    assert seen[-1]["type"] == "done", seen[-1]
    return reply_id


@database_sync_to_async
def config_for(real: ChatModel, shadow: ChatModel | None, system_prompt: str = "") -> ShadowConfig:
    return ShadowConfig.objects.create(model=real, shadow_model=shadow, system_prompt=system_prompt, sample_percent=100)


def user_counters(user_id: int) -> dict[bytes, bytes]:
    client = sync_client_for(quotas.settings.REDIS_URL)
    keys = sorted(client.scan_iter(f"{quotas.user_base(user_id)}:*"))
    return {key: (client.get(key) if client.type(key) == b"string" else b"(set)") for key in keys}


def meter(user_id: int) -> list[tuple[str, float]]:
    return [(item["name"], item["used"]) for item in admission.usage_for(user_id)["allowances"]]


async def test_a_shadow_is_sent_exactly_what_its_reply_was_sent_on_its_branch_with_files(alice, served):
    fake, real, shadow = served
    conversation = await Conversation.objects.acreate(owner=alice, model=real, system_prompt="Answer in French.")
    notes = await database_sync_to_async(uploads.store_upload)(alice, conversation.pk, "notes.txt", NOTES.encode())
    await final(alice, await replies.send_message(alice, conversation.pk, "What is due?", attachment_ids=[notes.pk]))
    second = await replies.send_message(alice, conversation.pk, "And the budget?")
    await final(alice, second)
    # An edit makes a branch: its reply was sent the first exchange and the edited question only.
    edited = await final(alice, await replies.edit_message(alice, second["user_message"]["id"], "And the deadline?"))
    await final(alice, await replies.send_message(alice, conversation.pk, "Thanks."))
    real_request = next(r.json for r in fake.replies if r.json["messages"][-1]["content"] == "And the deadline?")

    other_prompt = await config_for(real, shadow)
    new_prompt = await config_for(real, None, system_prompt="Answer in one line.")
    for config in (other_prompt, new_prompt):
        run = await asyncio.to_thread(run_shadow, edited, config.pk)
        assert run is not None and run.status == "complete", run and run.error_code
    by_model = [r.json for r in fake.replies[-2:]]
    assert by_model[0]["model"] == "fake-shadow" and by_model[1]["model"] == "fake-real"
    assert by_model[0]["messages"] == real_request["messages"]  # the conversation's own system prompt too
    assert real_request["messages"][0] == {"role": "system", "content": "Answer in French."}
    assert '<file name="notes.txt">' in real_request["messages"][1]["content"]
    assert [m["content"] for m in real_request["messages"][2:]] == [expected_text(5), "And the deadline?"]
    assert by_model[1]["messages"] == [{"role": "system", "content": "Answer in one line."}, *real_request["messages"][1:]]
    # The shadow model's own output cap: its 300 under the plan's 2,048.
    assert by_model[0]["max_tokens"] == 300 and by_model[1]["max_tokens"] == real_request["max_tokens"]
    stored = await ShadowRun.objects.aget(message_id=edited, config=new_prompt)
    assert stored.system_prompt_used == "Answer in one line." and stored.model == "fake-real"


def page_of(client, conversation_id: int) -> str:
    """The conversation's page as its owner sees it, less what differs per request (CSP nonces, CSRF tokens)."""
    response = client.get(f"/c/{conversation_id}/")
    assert response.status_code == 200
    page = re.sub(r'nonce="[^"]*"', "", response.content.decode())
    return re.sub(r'(csrfmiddlewaretoken" value=|csrf-token" content=|"X-CSRFToken": )"[^"]*"', "", page)


async def test_the_run_is_stored_billed_to_the_site_and_never_reaches_the_user(alice, alice_client, served, settings):
    fake, real, shadow = served
    conversation = await Conversation.objects.acreate(owner=alice, model=real, title="Shadowed", title_is_auto=False)
    reply_id = await final(alice, await replies.send_message(alice, conversation.pk, "Hello"))
    config = await config_for(real, shadow)

    client = sync_client()
    windows = quotas.Windows.at(time.time())
    site_before = await asyncio.to_thread(quotas.site_cost, client, windows)
    counters_before = await asyncio.to_thread(user_counters, alice.pk)
    meter_before = await asyncio.to_thread(meter, alice.pk)
    log_before = await asyncio.to_thread(client.xrange, events_key(reply_id))
    reply_before = (await Message.objects.aget(pk=reply_id)).as_dict()
    page_before = await asyncio.to_thread(page_of, alice_client, conversation.pk)
    feed = sync_client_for(settings.REDIS_URL).pubsub()
    feed.subscribe(user_channel(alice.pk))
    feed.get_message(timeout=1)  # the subscription's confirmation

    run = await asyncio.to_thread(run_shadow, reply_id, config.pk)

    assert run.status == "complete" and run.text == expected_text(5) and run.error_code == ""
    assert run.prompt_tokens > 0 and run.completion_tokens == 5 and not run.estimated
    assert run.cost_usd == (run.prompt_tokens * 2 + 5 * 20) / Decimal(1_000_000)
    assert run.ttft_ms is not None and run.duration_ms >= run.ttft_ms and run.finished is not None
    entry = await UsageRecord.objects.aget(kind="shadow")
    assert (entry.user_id, entry.conversation_id, entry.message_id, entry.attempt) == (None, conversation.pk, reply_id, 1)
    assert (entry.model, entry.outcome, entry.cost_usd) == ("fake-shadow", "complete", run.cost_usd)
    assert (entry.prompt_tokens, entry.completion_tokens) == (run.prompt_tokens, run.completion_tokens)
    # The site's month counts it; no counter, meter or ledger total of the user's does.
    assert await asyncio.to_thread(quotas.site_cost, client, windows) == site_before + int(run.cost_usd * quotas.MICRO_USD)
    assert await asyncio.to_thread(user_counters, alice.pk) == counters_before
    # The meter reads the windows of now: a minute that ended meanwhile may only count less.
    meter_after = dict(await asyncio.to_thread(meter, alice.pk))
    assert meter_after["requests_per_minute"] <= dict(meter_before)["requests_per_minute"]
    assert {k: v for k, v in meter_after.items() if k != "requests_per_minute"} == {
        k: v for k, v in meter_before if k != "requests_per_minute"}
    assert (await asyncio.to_thread(quotas.ledger_totals, alice.pk, windows))[4] == int(
        (await Message.objects.aget(pk=reply_id)).cost_usd * quotas.MICRO_USD
    )
    # The reply, its event log and the user's feed are as they were.
    assert (await Message.objects.aget(pk=reply_id)).as_dict() == reply_before
    assert await asyncio.to_thread(client.xrange, events_key(reply_id)) == log_before
    assert feed.get_message(timeout=0.5) is None
    feed.close()
    page_after = await asyncio.to_thread(page_of, alice_client, conversation.pk)
    # The meter's countdowns move with the clock between the two readings; nothing else may.
    assert without_countdowns(page_after) == without_countdowns(page_before) and expected_text(5).split()[0] in page_after


async def test_a_redelivered_task_makes_no_second_run_call_or_ledger_row(alice, served):
    fake, real, shadow = served
    conversation = await Conversation.objects.acreate(owner=alice, model=real, title="Shadowed", title_is_auto=False)
    reply_id = await final(alice, await replies.send_message(alice, conversation.pk, "Hello"))
    config = await config_for(real, shadow)
    calls_before = len(fake.requests)
    first = await asyncio.to_thread(run_shadow, reply_id, config.pk)
    again = await asyncio.to_thread(run_shadow, reply_id, config.pk)
    assert first is not None and again is None
    assert len(fake.requests) == calls_before + 1
    assert await ShadowRun.objects.filter(message_id=reply_id).acount() == 1
    assert await UsageRecord.objects.filter(kind="shadow").acount() == 1


async def test_a_failing_shadow_provider_records_a_failed_run_and_leaves_the_reply_alone(alice, served, settings):
    settings.PARLEY_RETRY_BASE_SECONDS = 0.01
    fake, real, _ = served
    broken = await ChatModel.objects.acreate(
        name="fake-broken#scenario=server_error", label="Broken", provider="openai", base_url=fake.base_url,
        input_price_per_million=Decimal("2"), output_price_per_million=Decimal("20"),
    )
    conversation = await Conversation.objects.acreate(owner=alice, model=real, title="Shadowed", title_is_auto=False)
    reply_id = await final(alice, await replies.send_message(alice, conversation.pk, "Hello"))
    reply_before = (await Message.objects.aget(pk=reply_id)).as_dict()
    config = await config_for(real, broken)
    run = await asyncio.to_thread(run_shadow, reply_id, config.pk)
    assert (run.status, run.error_code, run.text, run.cost_usd) == ("failed", "provider_unavailable", "", Decimal(0))
    assert run.finished is not None and run.ttft_ms is None
    # Retried like every call before its first token: a row per attempt, each billed nothing, to the site.
    rows = [
        (entry.attempt, entry.user_id, entry.outcome, entry.error_code, entry.cost_usd)
        async for entry in UsageRecord.objects.filter(kind="shadow").order_by("attempt")
    ]
    assert rows == [(n, None, "failed", "provider_unavailable", 0) for n in range(1, settings.PARLEY_RETRY_ATTEMPTS + 1)]
    reply = await Message.objects.aget(pk=reply_id)
    assert reply.as_dict() == reply_before and reply.status == "complete"


async def test_a_shadow_that_cannot_be_asked_fails_without_a_call_or_a_charge(alice, served, settings):
    fake, real, shadow = served
    conversation = await Conversation.objects.acreate(owner=alice, model=real, title="Shadowed", title_is_auto=False)
    reply_id = await final(alice, await replies.send_message(alice, conversation.pk, "Hello"))
    calls_before = len(fake.requests)
    await ChatModel.objects.filter(pk=shadow.pk).aupdate(enabled=False)
    off = await asyncio.to_thread(run_shadow, reply_id, (await config_for(real, shadow)).pk)
    settings.PARLEY_SITE_BUDGET_USD = Decimal("0.000001")  # the real reply has spent it
    spent = await asyncio.to_thread(run_shadow, reply_id, (await config_for(real, None, "Be brief.")).pk)
    assert (off.status, off.error_code) == ("failed", "unknown_model")
    assert (spent.status, spent.error_code) == ("failed", "quota_exceeded")
    assert len(fake.requests) == calls_before
    assert not await UsageRecord.objects.filter(kind="shadow").aexists()


async def test_only_complete_replies_are_shadowed_by_the_task(alice, served):
    fake, real, shadow = served
    conversation = await Conversation.objects.acreate(owner=alice, model=real, title="Shadowed", title_is_auto=False)
    reply_id = await final(alice, await replies.send_message(alice, conversation.pk, "Hello"))
    await Message.objects.filter(pk=reply_id).aupdate(status="stopped")
    config = await config_for(real, shadow)
    assert await asyncio.to_thread(run_shadow, reply_id, config.pk) is None
    assert await asyncio.to_thread(run_shadow, reply_id + 1000, config.pk) is None  # no such reply
    assert not await ShadowRun.objects.aexists()


async def test_a_redelivery_ends_a_run_its_lost_worker_left_running_without_asking_again(alice, served):
    fake, real, shadow = served
    conversation = await Conversation.objects.acreate(owner=alice, model=real, title="Shadowed", title_is_auto=False)
    old_reply = await final(alice, await replies.send_message(alice, conversation.pk, "Hello"))
    new_reply = await final(alice, await replies.send_message(alice, conversation.pk, "Again"))
    config = await config_for(real, shadow)
    long_ago = timezone.now() - timedelta(hours=1)
    await ShadowRun.objects.acreate(message_id=old_reply, config=config, model="fake-shadow", created=long_ago)
    await ShadowRun.objects.acreate(message_id=new_reply, config=config, model="fake-shadow")  # still being asked
    calls_before = len(fake.requests)
    assert await asyncio.to_thread(run_shadow, old_reply, config.pk) is None
    assert await asyncio.to_thread(run_shadow, new_reply, config.pk) is None
    abandoned = await ShadowRun.objects.aget(message_id=old_reply)
    assert (abandoned.status, abandoned.error_code) == ("failed", "interrupted") and abandoned.finished is not None
    assert (await ShadowRun.objects.aget(message_id=new_reply)).status == "running"
    assert len(fake.requests) == calls_before
    assert not await UsageRecord.objects.filter(kind="shadow").aexists()


async def test_a_shadow_can_try_a_presets_version_before_it_is_switched_to(alice, served):
    fake, real, _ = served
    preset = await database_sync_to_async(presets.create_preset)("Tutor", "Explain like a teacher.")
    await database_sync_to_async(presets.revise)(preset, "Explain like a patient teacher, in steps.", by=None)
    first = await PromptPresetVersion.objects.aget(preset=preset, number=1)
    conversation = await Conversation.objects.acreate(owner=alice, model=real, system_prompt="Answer in French.")
    reply_id = await final(alice, await replies.send_message(alice, conversation.pk, "What is a monad?"))
    config = await ShadowConfig.objects.acreate(model=real, preset_version=first, sample_percent=100)
    run = await asyncio.to_thread(run_shadow, reply_id, config.pk)
    assert run.status == "complete" and run.system_prompt_used == "Explain like a teacher."
    assert fake.replies[-1].json["messages"][0] == {"role": "system", "content": "Explain like a teacher."}


def test_a_shadow_of_the_same_model_and_prompt_is_refused_but_a_preset_version_differs(db):
    from django.core.exceptions import ValidationError

    real = ChatModel.objects.create(name="real-x", label="Real", provider="demo")
    with pytest.raises(ValidationError):
        ShadowConfig(model=real, sample_percent=10).clean()
    preset = presets.create_preset("Tutor", "Explain.")
    ShadowConfig(model=real, sample_percent=10, preset_version=preset.current_version).clean()
