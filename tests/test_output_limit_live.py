"""The budget holds against a provider that ignores max_tokens: 50 concurrent sends over two real
daphne processes to a server that streams 600 tokens whatever it is asked."""

import sys
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import httpx
import pytest
from django.db.models import Sum

from accounts.models import ApiToken, Plan
from billing.models import UsageRecord
from chat.models import ChatModel, Message
from tests.live import LiveProcess, free_port

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

BUDGET = Decimal("0.01")


@pytest.fixture
def runaway_server(tmp_path):
    port = free_port()
    server = LiveProcess(
        "fake-openai", [sys.executable, "-m", "tests.fakes.openai_server", "--port", str(port), "--tokens", "600", "--rate", "3000"],
        {"PYTHONUNBUFFERED": "1", "PATH": "/usr/bin:/bin"}, tmp_path / "fake.log", port=port,
    ).start()
    server.wait_for_port()
    yield f"http://127.0.0.1:{port}/v1"
    server.stop()


def test_fifty_concurrent_sends_to_a_runaway_provider_stay_within_the_budget(live_factory, alice, runaway_server):
    Plan.objects.filter(name="Free").update(
        cost_per_month=BUDGET, max_output_tokens=200, requests_per_minute=None, requests_per_day=None,
        concurrent_replies=None, tokens_per_day=None, tokens_per_month=None, fallback_model=None,
    )
    ChatModel.objects.create(
        name="runaway#ignore_max_tokens=1", label="Runaway", provider="openai", base_url=runaway_server,
        input_price_per_million=Decimal("1.00"), output_price_per_million=Decimal("10.00"), max_output_tokens=4096,
    )
    app = live_factory(OPENAI_BASE_URL=runaway_server, OPENAI_API_KEY="sk-test", PROVIDER_MAX_RETRIES="0")
    servers = [app.start_daphne(), app.start_daphne()]
    headers = {"Authorization": f"Bearer {ApiToken.issue(alice, 'runaway')[1]}"}

    def send(index: int) -> int:
        url = f"{servers[index % 2].url}/api/conversations/"
        conversation = httpx.post(url, json={"model": "runaway#ignore_max_tokens=1"}, headers=headers, timeout=20).json()["id"]
        response = httpx.post(f"{url}{conversation}/messages", json={"content": f"write forever {index}"}, headers=headers, timeout=20)
        return response.status_code

    with ThreadPoolExecutor(50) as pool:
        statuses = list(pool.map(send, range(50)))
    admitted = statuses.count(201)
    assert admitted > 0 and admitted + statuses.count(429) == 50, statuses
    deadline = time.monotonic() + 60
    while Message.objects.filter(status__in=Message.ACTIVE).exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    replies = Message.objects.filter(role="assistant", conversation__owner=alice)
    # Cut before usage came: each reply shows its ledger row's estimate, within the reservation.
    assert {(reply.status, reply.tokens_estimated) for reply in replies} == {("complete", True)}
    assert all(reply.completion_tokens <= 200 for reply in replies)
    ledger = UsageRecord.objects.filter(user=alice, kind="reply")
    assert ledger.count() == admitted
    assert all(entry.completion_tokens <= 200 for entry in ledger)
    spent = ledger.aggregate(total=Sum("cost_usd"))["total"]
    assert 0 < spent <= BUDGET, f"{admitted} replies spent ${spent} of a ${BUDGET} budget"
