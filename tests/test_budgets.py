"""Budgets beyond admission: refusals counted for admins, the fallback model past a share of the
monthly cost, free calls past a spent budget, and crashed replies charged and settled."""

import asyncio
import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.conf import settings
from django.utils import timezone

from accounts.models import Plan
from accounts.plans import EffectiveLimits, limits_for
from billing import admission, ledger, quotas
from billing.models import UsageRecord
from chat import replies
from chat.models import ChatModel, Conversation, Message
from chat.reaper import reap_interrupted


def nothing_used(user_id, windows):
    return (0, 0, 0, 0, 0)


@pytest.mark.django_db
def test_refusals_are_counted_by_day_user_and_limit(redis_client, alice):
    limits = EffectiveLimits(plan="t", requests_per_minute=1)
    now = time.time()
    outcomes = [quotas.admit(redis_client, alice.pk, limits, 0, Decimal(0), f"m{i}", nothing_used, now=now) for i in range(4)]
    assert [type(o).__name__ for o in outcomes] == ["Reservation", "Refusal", "Refusal", "Refusal"]
    day = quotas.Windows.at(now).day
    assert quotas.refusal_counts([day]) == {(day, alice.pk, "requests_per_minute"): 3}


@pytest.mark.django_db
def test_a_free_call_is_not_refused_by_a_spent_cost_budget(redis_client, alice):
    limits = EffectiveLimits(plan="t", cost_per_month=Decimal("0.01"), tokens_per_day=100)
    spent = quotas.admit(redis_client, alice.pk, limits, 10, Decimal("0.01"), "paid", nothing_used)
    assert isinstance(spent, quotas.Reservation)
    assert isinstance(quotas.admit(redis_client, alice.pk, limits, 10, Decimal("0.001"), "paid-2", nothing_used), quotas.Refusal)
    assert isinstance(quotas.admit(redis_client, alice.pk, limits, 10, Decimal(0), "free", nothing_used), quotas.Reservation)
    refused = quotas.admit(redis_client, alice.pk, limits, 200, Decimal(0), "too-long", nothing_used)
    assert isinstance(refused, quotas.Refusal) and refused.limit == "tokens_per_day"  # other limits still apply


@pytest.fixture
def priced(db):
    """A paid model served by the offline demo provider, and a plan that falls back to the free demo at 80 %."""
    model = ChatModel.objects.create(
        name="priced-demo", label="Priced demo", provider="demo", context_window=8192, max_output_tokens=1024,
        input_price_per_million=Decimal("10"), output_price_per_million=Decimal("10"),
    )
    Plan.objects.filter(name="Free").update(
        cost_per_month=Decimal("1.00"), fallback_model=ChatModel.objects.get(name="parley-demo"), fallback_at_percent=80,
    )
    return model


def spend(user, cost: str) -> None:
    UsageRecord.objects.create(user=user, kind="reply", provider="demo", model="priced-demo", cost_usd=Decimal(cost), outcome="complete")


async def finish(user, event) -> Message:
    async for _ in replies.attach(user, event["assistant_message"]["id"], "0-0"):
        pass
    return await Message.objects.aget(pk=event["assistant_message"]["id"])


@pytest.mark.django_db(transaction=True)
async def test_below_the_threshold_the_chosen_model_replies(priced, alice):
    from channels.db import database_sync_to_async

    await database_sync_to_async(spend)(alice, "0.79")
    event = await replies.send_message(alice, None, "hello /words 3", "priced-demo")
    reply = await finish(alice, event)
    assert reply.model == "priced-demo" and reply.notice == ""


@pytest.mark.django_db(transaction=True)
async def test_past_the_threshold_the_fallback_model_replies_with_a_notice(priced, alice):
    from channels.db import database_sync_to_async

    await database_sync_to_async(spend)(alice, "0.85")
    event = await replies.send_message(alice, None, "hello /words 3", "priced-demo")
    assert event["assistant_message"]["model"] == "parley-demo"
    assert "85 %" in event["assistant_message"]["notice"] and "Parley demo (offline) answers instead of Priced demo" in event["assistant_message"]["notice"]
    reply = await finish(alice, event)
    assert reply.status == "complete" and reply.model == "parley-demo"
    conversation = await Conversation.objects.select_related("model").aget(pk=event["conversation"]["id"])
    assert conversation.model.name == "priced-demo"  # the user's choice stands for when the budget renews
    entry = await UsageRecord.objects.aget(message_id=reply.pk)
    assert entry.model == "parley-demo" and entry.cost_usd == 0


@pytest.mark.django_db(transaction=True)
async def test_past_the_budget_a_free_fallback_keeps_replying(priced, alice):
    from channels.db import database_sync_to_async

    await database_sync_to_async(spend)(alice, "1.20")
    event = await replies.send_message(alice, None, "still there? /words 2", "priced-demo")
    assert (await finish(alice, event)).status == "complete"


@pytest.mark.django_db
def test_a_reply_whose_process_died_is_charged_and_its_reservation_settled(
    priced, alice, redis_client, django_capture_on_commit_callbacks
):
    _, limits = limits_for(alice.pk)
    pricing = ledger.Pricing(priced.input_price_per_million, priced.output_price_per_million)
    reservation = admission.reserve(alice.pk, limits, pricing, 40, 1024)
    conversation = Conversation.objects.create(owner=alice, model=priced)
    reply = Message.objects.create(
        conversation=conversation, role="assistant", status="streaming", content="Twelve chars", provider="demo",
        model="priced-demo", generator="dead-generator", quota_claim=reservation.claim(40),
        created=timezone.now() - timedelta(seconds=settings.PARLEY_HEARTBEAT_TTL + 30),
    )
    with django_capture_on_commit_callbacks(execute=True):
        assert reap_interrupted(redis_client) == [reply.pk]
    entry = UsageRecord.objects.get(message=reply)
    assert (entry.outcome, entry.estimated, entry.prompt_tokens, entry.completion_tokens) == ("interrupted", True, 40, 3)
    assert entry.cost_usd == Decimal("0.00043")
    keys = quotas.keys_of(alice.pk, reservation.windows)
    assert int(redis_client.get(keys[3])) == 43  # the 1,064 reserved tokens became the 43 used
    assert int(redis_client.get(keys[4])) == 430  # micro-dollars
    assert redis_client.zcard(keys[5]) == 0  # its concurrency slot is free


@pytest.mark.django_db
def test_allowances_report_use_against_each_limit(alice, redis_client):
    limits = EffectiveLimits(plan="t", requests_per_day=10, tokens_per_month=1000, cost_per_month=Decimal("2"))
    quotas.admit(redis_client, alice.pk, limits, 100, Decimal("0.5"), "one")
    by_name = {a.name: a for a in admission.allowances(alice.pk, limits)}
    assert (by_name["requests_per_day"].used, by_name["requests_per_day"].allowed) == (1, 10)
    assert (by_name["tokens_per_month"].used, by_name["tokens_per_month"].allowed) == (100, 1000)
    assert (by_name["cost_per_month"].used, by_name["cost_per_month"].allowed) == (0.5, 2.0)
    assert by_name["tokens_per_day"].allowed is None


@pytest.mark.django_db(transaction=True)
async def test_a_budget_too_small_for_the_chosen_model_falls_back_instead_of_refusing(priced, alice):
    from channels.db import database_sync_to_async

    await ChatModel.objects.filter(pk=priced.pk).aupdate(input_price_per_million=Decimal(1000), output_price_per_million=Decimal(1000))
    await database_sync_to_async(spend)(alice, "0.30")  # below the 80 % threshold, but 1,024 tokens at $0.001 do not fit
    event = await replies.send_message(alice, None, "hello /words 3", "priced-demo")
    assert event["assistant_message"]["model"] == "parley-demo"
    assert event["assistant_message"]["notice"].startswith(
        "What is left of this month's budget cannot cover a reply from Priced demo, so Parley demo (offline) answers instead"
    )
    assert (await finish(alice, event)).status == "complete"
    day = quotas.Windows.at(time.time()).day
    counts = await asyncio.to_thread(quotas.refusal_counts, [day])
    assert (day, alice.pk, "cost_per_month") not in counts  # served by the fallback: not a refusal


@pytest.mark.django_db(transaction=True)
async def test_without_a_fallback_model_a_budget_too_small_refuses(priced, alice):
    from channels.db import database_sync_to_async

    from chat.actions import ActionError

    await Plan.objects.filter(name="Free").aupdate(fallback_model=None)
    await ChatModel.objects.filter(pk=priced.pk).aupdate(input_price_per_million=Decimal(1000), output_price_per_million=Decimal(1000))
    await database_sync_to_async(spend)(alice, "0.30")
    with pytest.raises(ActionError) as refused:
        await replies.send_message(alice, None, "hello", "priced-demo")
    assert refused.value.code == "quota_exceeded" and refused.value.limit["name"] == "cost_per_month"
    assert not await Message.objects.filter(conversation__owner=alice).aexists()
    day = quotas.Windows.at(time.time()).day
    assert (await asyncio.to_thread(quotas.refusal_counts, [day]))[(day, alice.pk, "cost_per_month")] == 1


def test_estimates_count_non_ascii_text_at_about_a_token_a_character():
    from providers.base import estimate_tokens

    # Four characters a token would reserve a quarter of what Chinese text costs.
    assert estimate_tokens("你好" * 100) >= 200
    assert estimate_tokens("word " * 80) == 100
    assert estimate_tokens("café") == 1  # one accented letter: one extra byte, under a token


def test_one_estimator_counts_for_fitting_cutting_and_billing():
    from chat import history
    from providers import base

    # A second formula would let what is reserved, cut and billed drift apart again.
    assert not hasattr(base.Provider, "estimate_tokens")
    assert ledger.estimate_tokens is base.estimate_tokens and history.estimate_tokens is base.estimate_tokens
    assert not hasattr(base, "estimate_output_tokens")
