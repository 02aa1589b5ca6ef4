"""The quota engine against a real Redis: atomic admission, reservations, settling, rebuilding from the ledger."""

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest
from django.conf import settings

from accounts.plans import EffectiveLimits
from billing import quotas
from billing.models import UsageRecord
from chat.models import ChatModel, Conversation
from parley.redis_clients import sync_client_for


def nothing_used(user_id, windows):
    return (0, 0, 0, 0, 0)


@pytest.fixture
def clients():
    """Two connection pools, as two web processes would have."""
    made = [sync_client_for(settings.REDIS_URL) for _ in range(2)]
    user_id = int(uuid.uuid4().int % 10**9)  # counters of other runs cannot collide
    yield made, user_id
    forget(made[0], user_id)
    for client in made:
        client.close()


def forget(client, user_id):
    keys = list(client.scan_iter(f"{quotas.user_base(user_id)}:*"))
    if keys:
        client.delete(*keys)


def burst(clients, user_id, limits, count, tokens=0, cost=Decimal(0)):
    """`count` calls at once from 16 threads over the two pools."""
    def call(i):
        return quotas.admit(clients[i % 2], user_id, limits, tokens, cost, f"m{i}", nothing_used)

    with ThreadPoolExecutor(16) as pool:
        return list(pool.map(call, range(count)))


def test_a_burst_admits_exactly_the_requests_per_minute(clients):
    made, user_id = clients
    results = burst(made, user_id, EffectiveLimits(plan="t", requests_per_minute=7), 40)
    admitted = [r for r in results if isinstance(r, quotas.Reservation)]
    refused = [r for r in results if isinstance(r, quotas.Refusal)]
    assert len(admitted) == 7 and len(refused) == 33
    assert {r.limit for r in refused} == {"requests_per_minute"}
    assert refused[0].allowed == 7 and refused[0].remaining == 0
    assert 0 < refused[0].retry_after(time.time()) <= 61


def test_token_budgets_reserve_and_settle_to_what_was_used(clients):
    made, user_id = clients
    limits = EffectiveLimits(plan="t", tokens_per_day=1000)
    results = burst(made, user_id, limits, 10, tokens=300)
    admitted = [r for r in results if isinstance(r, quotas.Reservation)]
    assert len(admitted) == 3  # 900 reserved: a fourth would overspend
    quotas.settle(made[0], admitted[0], 100, Decimal(0))  # it used 100 of its 300
    again = quotas.admit(made[1], user_id, limits, 300, Decimal(0), "late", nothing_used)
    assert isinstance(again, quotas.Reservation)  # 100 + 300 + 300 + 300 = 1000
    refused = quotas.admit(made[1], user_id, limits, 1, Decimal(0), "over", nothing_used)
    assert isinstance(refused, quotas.Refusal) and refused.limit == "tokens_per_day" and refused.used == 1000


def test_cost_budgets_count_in_micro_dollars(clients):
    made, user_id = clients
    limits = EffectiveLimits(plan="t", cost_per_month=Decimal("0.05"))
    results = burst(made, user_id, limits, 8, cost=Decimal("0.02"))
    assert sum(isinstance(r, quotas.Reservation) for r in results) == 2
    refusal = next(r for r in results if isinstance(r, quotas.Refusal))
    assert refusal.limit == "cost_per_month" and refusal.allowed == 50_000 and refusal.used == 40_000


def test_concurrent_replies_hold_a_slot_until_settled(clients):
    made, user_id = clients
    limits = EffectiveLimits(plan="t", concurrent_replies=2)
    results = burst(made, user_id, limits, 6)
    admitted = [r for r in results if isinstance(r, quotas.Reservation)]
    assert len(admitted) == 2
    refusal = next(r for r in results if isinstance(r, quotas.Refusal))
    assert refusal.limit == "concurrent_replies" and refusal.resets_at == 0
    quotas.settle(made[0], admitted[0], 0, Decimal(0))
    assert isinstance(quotas.admit(made[1], user_id, limits, 0, Decimal(0), "next", nothing_used), quotas.Reservation)


def test_no_limits_admit_everything(clients):
    made, user_id = clients
    results = burst(made, user_id, EffectiveLimits(plan="Staff"), 30, tokens=10**9)
    assert all(isinstance(r, quotas.Reservation) for r in results)


@pytest.mark.django_db
def test_lost_counters_are_rebuilt_from_the_ledger(clients, alice):
    made, _ = clients
    conversation = Conversation.objects.create(owner=alice, model=ChatModel.objects.get(name="parley-demo"))
    UsageRecord.objects.create(user=alice, conversation=conversation, kind="reply", provider="demo",
                               model="parley-demo", prompt_tokens=500, completion_tokens=400, outcome="complete")
    conversation.messages.create(role="user", content="hi")
    limits = EffectiveLimits(plan="t", tokens_per_day=1000, requests_per_day=5)
    try:
        # Redis knows nothing of this user (a flush, a restart): the ledger's 900 tokens still count.
        refused = quotas.admit(made[0], alice.pk, limits, 200, Decimal(0), "a", quotas.ledger_totals)
        assert isinstance(refused, quotas.Refusal) and refused.limit == "tokens_per_day" and refused.used == 900
        admitted = quotas.admit(made[0], alice.pk, limits, 100, Decimal(0), "b", quotas.ledger_totals)
        assert isinstance(admitted, quotas.Reservation)
        forget(made[0], alice.pk)
        again = quotas.admit(made[1], alice.pk, limits, 100, Decimal(0), "c", quotas.ledger_totals)
        assert isinstance(again, quotas.Reservation)  # 900 from the ledger + 100
        requests = made[1].get(f"{quotas.user_base(alice.pk)}:rpd:{again.windows.day}")
        assert int(requests) == 2  # the one send the database holds, and this call
    finally:
        forget(made[0], alice.pk)


def test_windows_end_at_the_next_minute_day_and_month():
    windows = quotas.Windows.at(1_798_761_599.5)  # 2026-12-31 23:59:59.5 UTC
    assert (windows.minute, windows.day, windows.month) == ("202612312359", "20261231", "202612")
    assert windows.minute_ends == windows.day_ends == windows.month_ends == 1_798_761_600


def test_a_refusal_says_which_limit_what_is_left_and_when_it_resets():
    refusal = quotas.Refusal("cost_per_month", 2_000_000, 2_100_000, 1_000_060)
    assert refusal.remaining == 0
    assert refusal.as_dict(1_000_000) == {
        "name": "cost_per_month", "label": "$2.00 of model use a month", "unit": "usd", "allowed": 2.0, "remaining": 0.0,
        "resets_at": "1970-01-12T13:47:40+00:00", "resets_in": 60,
    }
    assert refusal.describe(1_000_000) == "You have reached your plan's limit of $2.00 of model use a month. It resets in 60 s."
    slots = quotas.Refusal("concurrent_replies", 2, 2, 0)
    assert slots.as_dict(0)["resets_in"] is None and slots.retry_after(0) == 2.0
    assert slots.as_dict(0)["label"] == "2 replies at a time"
    assert quotas.Refusal("concurrent_replies", 1, 1, 0).describe(0) == (
        "You have reached your plan's limit of 1 reply at a time. Wait for a reply to finish."
    )


def test_a_new_minute_or_day_starts_at_zero_without_asking_the_ledger(clients):
    made, user_id = clients
    limits = EffectiveLimits(plan="t", requests_per_minute=2, requests_per_day=10)
    now = 1_800_000_000.0
    assert isinstance(quotas.admit(made[0], user_id, limits, 0, Decimal(0), "a", nothing_used, now=now), quotas.Reservation)

    def ledger_must_not_be_asked(user_id, windows):
        raise AssertionError("the month's counter is there: the new minute starts at zero")

    for second in (60, 61):  # the next minute: two more requests fit
        result = quotas.admit(made[1], user_id, limits, 0, Decimal(0), f"b{second}", ledger_must_not_be_asked, now=now + second)
        assert isinstance(result, quotas.Reservation)
    refused = quotas.admit(made[1], user_id, limits, 0, Decimal(0), "c", ledger_must_not_be_asked, now=now + 62)
    assert isinstance(refused, quotas.Refusal) and refused.limit == "requests_per_minute" and refused.used == 2
    day = made[0].get(f"{quotas.user_base(user_id)}:rpd:{quotas.Windows.at(now).day}")
    assert int(day) == 3  # the day went on counting across the minutes
