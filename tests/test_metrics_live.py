"""/metrics of one process shows the sum of every process of the run: two daphnes and a Celery worker."""

import asyncio
import time
import uuid
from collections.abc import Callable

import httpx
import pytest
import websockets
from django.db.models import Sum
from django.urls import resolve
from prometheus_client.parser import text_string_to_metric_families

from accounts.models import ApiToken
from agents.models import AgentRun
from breakers.models import Breaker
from billing.models import UsageRecord
from chat.models import Message

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]


def scrape(url: str) -> list:
    response = httpx.get(f"{url}/metrics", timeout=10)
    assert response.status_code == 200, response.text
    return [sample for family in text_string_to_metric_families(response.text) for sample in family.samples]


def total(samples: list, name: str, **labels: str) -> float:
    return sum(s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def eventually(check: Callable[[], bool], timeout: float = 20.0, seen: Callable[[], object] = lambda: "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"never happened: {seen()}"
        time.sleep(0.2)


def send(url: str, token: str, content: str) -> tuple[int, int]:
    headers = {"Authorization": f"Bearer {token}"}
    conversation = httpx.post(f"{url}/api/conversations/", json={}, headers=headers).json()["id"]
    response = httpx.post(f"{url}/api/conversations/{conversation}/messages", json={"content": content}, headers=headers)
    assert response.status_code == 201, response.text
    return conversation, response.json()["assistant_message"]["id"]


def ended(reply_id: int) -> bool:
    return Message.objects.get(pk=reply_id).status not in {"queued", "streaming"}


def ledger_tokens() -> tuple[int, int]:
    sums = UsageRecord.objects.aggregate(input=Sum("prompt_tokens"), output=Sum("completion_tokens"))
    return sums["input"] or 0, sums["output"] or 0


def metric_tokens(samples: list) -> tuple[int, int]:
    return (round(total(samples, "tokens_used_total", direction="input")),
            round(total(samples, "tokens_used_total", direction="output")))


def test_one_process_serves_the_sum_of_every_process(live_factory, alice):
    # A queue of its own: the session's worker (live_app) must not take this app's tasks.
    app = live_factory(PARLEY_CELERY_QUEUE=f"metrics-{uuid.uuid4().hex[:8]}")
    first, second = app.start_daphne(), app.start_daphne()
    app.start_worker()
    token = ApiToken.issue(alice, "metrics")[1]

    replies = []
    for server, n in ((first, 12), (second, 7), (second, 5)):
        # One at a time: alice's plan allows two replies at once, and three quick sends exceed it.
        replies.append(send(server.url, token, f"hello /words {n}"))
        eventually(lambda: ended(replies[-1][1]))
    # An agent run's model steps are billed by the worker's prefork child.
    conversation = httpx.post(f"{first.url}/api/conversations/", json={}, headers={"Authorization": f"Bearer {token}"}).json()["id"]
    run = httpx.post(
        f"{first.url}/api/conversations/{conversation}/runs", json={"goal": "Work out 2 ** 10"},
        headers={"Authorization": f"Bearer {token}"},
    ).json()["run"]
    eventually(lambda: all(ended(reply) for _, reply in replies))
    eventually(lambda: AgentRun.objects.get(pk=run["id"]).status == "succeeded", timeout=40)

    eventually(
        lambda: metric_tokens(scrape(first.url)) == ledger_tokens(),
        seen=lambda: (metric_tokens(scrape(first.url)), ledger_tokens()),
    )
    samples = scrape(first.url)
    assert metric_tokens(samples) == ledger_tokens()
    assert UsageRecord.objects.filter(kind="agent").exists()
    agent_output = UsageRecord.objects.filter(kind="agent").aggregate(Sum("completion_tokens"))["completion_tokens__sum"]
    assert ledger_tokens()[1] == 24 + agent_output
    assert total(samples, "parley_agent_runs", state="succeeded") == 1
    for provider, model in UsageRecord.objects.values_list("provider", "model").distinct():
        rows = UsageRecord.objects.filter(provider=provider, model=model).aggregate(Sum("completion_tokens"))
        assert total(samples, "tokens_used_total", provider=provider, model=model, direction="output") == rows["completion_tokens__sum"]

    # Requests by URL pattern, never by path: three sends over two processes, one series.
    route = resolve(f"/api/conversations/{replies[0][0]}/messages").route
    assert total(samples, "parley_http_requests_total", route=route, method="POST", status="201") == 3
    assert not [s for s in samples if s.name == "parley_http_requests_total" and str(replies[0][0]) in s.labels["route"]]
    assert total(samples, "parley_time_to_first_token_seconds_count") == 3
    assert total(samples, "parley_reply_duration_seconds_count", status="complete") == 3

    # The worker's prefork child ran the titles (and the start's model refresh).
    assert total(samples, "parley_celery_tasks_total", task="chat.tasks.generate_title", outcome="success") == 3
    assert total(samples, "parley_celery_task_duration_seconds_count", task="chat.tasks.generate_title") == 3
    assert total(samples, "parley_celery_tasks_total", task="chat.tasks.refresh_models", outcome="success") >= 1

    # A slow reply on the second process shows on the first process's scrape, and goes away.
    assert total(samples, "parley_active_streams") == 0
    _, slow = send(second.url, token, "slow /words 40 /slow 100")
    eventually(lambda: total(scrape(first.url), "parley_active_streams") == 1, timeout=4)
    eventually(lambda: ended(slow))
    eventually(lambda: total(scrape(first.url), "parley_active_streams") == 0, timeout=5)


def test_websocket_connections_are_counted_across_processes(live_factory, alice):
    app = live_factory()
    first, second = app.start_daphne(), app.start_daphne()
    token = ApiToken.issue(alice, "sockets")[1]

    async def scenario() -> tuple[float, float]:
        sockets = [
            await websockets.connect(server.url.replace("http", "ws") + "/ws/chat/", additional_headers={"Authorization": f"Bearer {token}"})
            for server in (first, second, second)
        ]
        opened = await asyncio.to_thread(lambda: total(scrape(first.url), "parley_websocket_connections"))
        for ws in sockets:
            await ws.close()
        await asyncio.sleep(0.3)
        closed = await asyncio.to_thread(lambda: total(scrape(first.url), "parley_websocket_connections"))
        return opened, closed

    assert asyncio.run(scenario()) == (3, 0)


def test_a_killed_process_leaves_its_counters_and_not_its_gauges(live_factory, alice):
    app = live_factory()
    first, second = app.start_daphne(), app.start_daphne()
    token = ApiToken.issue(alice, "gone")[1]

    async def scenario() -> tuple[list, list]:
        ws = await websockets.connect(second.url.replace("http", "ws") + "/ws/chat/", additional_headers={"Authorization": f"Bearer {token}"})
        await asyncio.to_thread(send, second.url, token, "long /words 100 /slow 200")
        await asyncio.to_thread(httpx.get, f"{second.url}/healthz")
        before = await asyncio.to_thread(scrape, first.url)
        await asyncio.to_thread(second.kill)  # SIGKILL: no cleanup of its own runs
        after = await asyncio.to_thread(scrape, first.url)
        await ws.close()
        return before, after

    before, after = asyncio.run(scenario())
    assert total(before, "parley_websocket_connections") == 1
    assert total(before, "parley_active_streams") == 1
    assert total(before, "parley_http_requests_total", route="healthz") == 1
    assert total(after, "parley_websocket_connections") == 0
    assert total(after, "parley_active_streams") == 0
    assert total(after, "parley_http_requests_total", route="healthz") == 1


def test_breakers_and_agent_runs_are_read_at_scrape_time(live_factory):
    # A forced breaker is listed whatever the catalogue offers.
    Breaker.objects.create(endpoint="edge", model="m-1", mode=Breaker.Mode.FORCED_OPEN)
    app = live_factory()
    app.start_daphne()
    samples = scrape(app.url)
    states = {s.labels["state"]: s.value for s in samples if s.name == "parley_agent_runs"}
    assert states == dict.fromkeys(AgentRun.Status.values, 0)
    edge = {s.labels["state"]: s.value for s in samples if s.name == "parley_breaker_state" and s.labels["endpoint"] == "edge"}
    assert edge == {"closed": 0, "open": 0, "half_open": 0, "forced_open": 1, "forced_closed": 0, "unknown": 0}
