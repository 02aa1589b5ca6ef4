"""Shadow runs end to end: a reply sent to a real daphne process, its shadow run by a real Celery
worker against the fake OpenAI server (a process of its own); billed to the site, never to the user,
never shown; a redelivered task makes nothing twice; a failing shadow leaves the reply alone."""

import time
import uuid
from decimal import Decimal

import httpx
import pytest
from django.db.models import Sum

from accounts.models import ApiToken
from billing import quotas
from billing.models import UsageRecord
from chat.models import ChatModel, Message
from parley.celery import app as celery_app
from parley.redis_clients import sync_client
from shadows.models import ShadowConfig, ShadowRun
from tests.fakes import expected_text
from tests.live import fake_openai_server, wait_until

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def fake_openai(tmp_path):
    with fake_openai_server(tmp_path, tokens=6) as url:
        yield url


def model(name: str, base_url: str, price_in: str, price_out: str) -> ChatModel:
    return ChatModel.objects.create(
        name=name, label=name, provider="openai", base_url=base_url,
        input_price_per_million=Decimal(price_in), output_price_per_million=Decimal(price_out),
    )


def test_a_sampled_reply_is_shadowed_by_the_worker_billed_to_the_site_and_never_shown(live_factory, alice, fake_openai):
    real = model("live-real", fake_openai, "1", "10")
    shadow = model("live-shadow#tokens=9", fake_openai, "3", "30")
    broken = model("live-broken#scenario=server_error", fake_openai, "3", "30")
    failing_real = model("live-failing#scenario=server_error", fake_openai, "1", "10")
    good = ShadowConfig.objects.create(model=real, shadow_model=shadow, sample_percent=100)
    failing = ShadowConfig.objects.create(model=real, shadow_model=broken, sample_percent=100)
    never = ShadowConfig.objects.create(model=real, system_prompt="Never asked.", sample_percent=0)
    of_failed_reply = ShadowConfig.objects.create(model=failing_real, system_prompt="Be brief.", sample_percent=100)
    queue = f"shadows-live-{uuid.uuid4().hex[:8]}"  # this test's worker alone takes its tasks
    app = live_factory(
        OPENAI_BASE_URL=fake_openai, OPENAI_API_KEY="sk-test", PROVIDER_MAX_RETRIES="0", PARLEY_SITE_BUDGET_USD="100",
        PARLEY_CELERY_QUEUE=queue,
    )
    server = app.start_daphne()
    worker = app.start_worker()
    headers = {"Authorization": f"Bearer {ApiToken.issue(alice, 'shadows')[1]}"}

    def send(model_name: str) -> tuple[int, int]:
        url = f"{server.url}/api/conversations/"
        conversation = httpx.post(url, json={"model": model_name}, headers=headers, timeout=20).json()["id"]
        sent = httpx.post(f"{url}{conversation}/messages", json={"content": "Hello"}, headers=headers, timeout=20)
        assert sent.status_code == 201, sent.text
        return conversation, sent.json()["assistant_message"]["id"]

    def seen_by_user(conversation: int, reply: int) -> tuple:
        detail = httpx.get(f"{server.url}/api/conversations/{conversation}/", headers=headers, timeout=20)
        events = httpx.get(f"{server.url}/api/messages/{reply}/events?after=0-0", headers=headers, timeout=20)
        # The messages only: the conversation's title comes from the worker whenever it has it.
        return detail.status_code, detail.json()["messages"], events.text

    conversation, reply_id = send("live-real")
    wait_until(lambda: Message.objects.filter(pk=reply_id, status="complete").exists(), what="the reply")
    shown = seen_by_user(conversation, reply_id)
    wait_until(lambda: ShadowRun.objects.filter(message_id=reply_id).exclude(status="running").count() == 2, what="both shadows")
    failed_conversation, failed_reply = send("live-failing#scenario=server_error")
    wait_until(lambda: Message.objects.filter(pk=failed_reply, status="failed").exists(), what="the failing reply")

    reply = Message.objects.get(pk=reply_id)
    assert (reply.status, reply.content) == ("complete", expected_text(6))
    ran = ShadowRun.objects.get(message_id=reply_id, config=good)
    assert (ran.status, ran.text, ran.model) == ("complete", expected_text(9), "live-shadow#tokens=9")
    assert ran.prompt_tokens > 0 and ran.completion_tokens == 9 and ran.cost_usd > 0
    assert ran.ttft_ms is not None and ran.duration_ms is not None and ran.finished is not None
    broke = ShadowRun.objects.get(message_id=reply_id, config=failing)
    assert (broke.status, broke.error_code, broke.cost_usd) == ("failed", "provider_unavailable", 0)
    assert not ShadowRun.objects.filter(config=never).exists()
    assert not ShadowRun.objects.filter(config=of_failed_reply).exists()  # only complete replies

    shadow_rows = UsageRecord.objects.filter(kind="shadow").order_by("id")
    assert {(r.user_id, r.conversation_id, r.message_id) for r in shadow_rows} == {(None, conversation, reply_id)}
    # The broken shadow was retried before its first token, like every call: a row per attempt, none billed.
    assert sorted((r.model, r.attempt, r.outcome, r.cost_usd) for r in shadow_rows) == sorted([
        ("live-shadow#tokens=9", 1, "complete", ran.cost_usd),
        *[("live-broken#scenario=server_error", n, "failed", Decimal(0)) for n in (1, 2, 3)],
    ])

    # The user pays for their reply (and its title) alone: counters, meter and ledger agree without the shadows.
    windows = quotas.Windows.at(time.time())
    own = UsageRecord.objects.filter(user=alice).aggregate(cost=Sum("cost_usd"))["cost"]
    assert own > 0
    cost_counter = int(sync_client().get(quotas.keys_of(alice.pk, windows)[4]))
    assert cost_counter == int(own * quotas.MICRO_USD) == quotas.ledger_totals(alice.pk, windows)[4]
    meter = httpx.get(f"{server.url}/api/usage/", headers=headers, timeout=20).json()
    used = {item["name"]: item["used"] for item in meter["allowances"]}
    assert Decimal(str(used["cost_per_month"])) == own
    # The site's month counts both.
    everything = UsageRecord.objects.aggregate(cost=Sum("cost_usd"))["cost"]
    assert everything == own + ran.cost_usd
    assert int(sync_client().get(quotas.site_cost_key(windows.month))) == int(everything * quotas.MICRO_USD)

    # What the user is shown did not change, and holds no shadow.
    assert seen_by_user(conversation, reply_id) == shown
    assert shown[0] == 200 and expected_text(9) not in str(shown)

    # A redelivered task finds its run: no second run, call or ledger row.
    assert "not asked again" not in worker.log_path.read_text()
    celery_app.send_task("shadows.tasks.run_shadow", args=[reply_id, good.pk], queue=queue)
    wait_until(lambda: "exists already: not asked again" in worker.log_path.read_text(), what="the redelivered task")
    assert ShadowRun.objects.filter(message_id=reply_id).count() == 2
    assert UsageRecord.objects.filter(kind="shadow").count() == 4  # no second row for any attempt
