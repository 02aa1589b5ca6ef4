"""Agent runs end to end: real daphne, a real Celery worker and Redis; progress over SSE and the
WebSocket in order and exactly once, re-attaching at a cursor, and the run's ledger."""

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from decimal import Decimal

import httpx
import pytest
import websockets
from django.conf import settings
from django.contrib.auth.models import Permission

from accounts.models import ApiToken, Plan
from agents.models import AgentRun, AgentStep, Artifact
from billing.models import UsageRecord
from chat.models import ChatModel
from tests.live import LiveProcess, free_port

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

GOAL = "Find what we said about parley and compute 12 * 7"


@pytest.fixture
def token(alice) -> str:
    return ApiToken.issue(alice, "runs")[1]


def api(base_url: str, token: str, method: str, path: str, **kwargs) -> httpx.Response:
    return httpx.request(method, f"{base_url}{path}", headers={"Authorization": f"Bearer {token}"}, timeout=30, **kwargs)


def new_conversation(base_url: str, token: str) -> int:
    return api(base_url, token, "POST", "/api/conversations/", json={}).json()["id"]


def start(base_url: str, token: str, goal: str = GOAL, conversation: int | None = None) -> dict:
    conversation = conversation or new_conversation(base_url, token)
    response = api(base_url, token, "POST", f"/api/conversations/{conversation}/runs", json={"goal": goal})
    assert response.status_code == 201, response.text
    return response.json()["run"]


def sse_run_events(
    base_url: str, token: str, run_id: int, after: str = "0-0", stop_after: int | None = None, until: str = "run_finished"
) -> list[dict]:
    """The run's events as SSE delivers them (each with the SSE id), until run_finished (or the
    first event of type `until`, or `stop_after` events)."""
    received, current = [], {}
    url = f"{base_url}/api/runs/{run_id}/events?after={after}"
    with httpx.stream("GET", url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line == "" and "data" in current:
                event = json.loads(current["data"])
                assert event["type"] == current["event"] and event["cursor"] == current["id"]
                received.append(event)
                current = {}
                if event["type"] in {"run_finished", until} or (stop_after and len(received) >= stop_after):
                    break
            elif line and not line.startswith(":"):
                field, _, value = line.partition(": ")
                current[field] = value
    return received


def cursor_key(cursor: str) -> tuple[int, int]:
    offset, _, seq = cursor.partition("-")
    return int(offset), int(seq)


def assert_in_order_once(received: list[dict]) -> None:
    keys = [cursor_key(event["cursor"]) for event in received]
    assert keys == sorted(keys) and len(set(keys)) == len(keys), keys


def test_a_run_works_through_its_tools_and_streams_every_step_over_sse(live_app, token, alice):
    run = start(live_app.url, token)
    assert run["status"] == "queued" and run["goal"] == GOAL
    received = sse_run_events(live_app.url, token, run["id"])
    assert_in_order_once(received)
    types = [event["type"] for event in received]
    assert types[0] == "run_started" and types[-1] == "run_finished"
    assert received[-1]["status"] == "succeeded", received[-1]
    tools = [event["tool"] for event in received if event["type"] == "tool_call"]
    assert tools == ["search_conversations", "calculate", "write_report"]
    results = {event["call_id"]: event for event in received if event["type"] == "tool_result"}
    assert all(result["ok"] for result in results.values())
    calculated = next(e for e in received if e["type"] == "tool_result" and e["result"] and "expression" in e["result"])
    assert calculated["result"] == {"expression": "12 * 7", "result": "84"}
    percents = [event["percent"] for event in received if event["type"] == "progress"]
    assert percents == sorted(percents) and percents[-1] > 0

    stored = AgentRun.objects.get(pk=run["id"])
    assert stored.status == "succeeded" and stored.progress == 100
    final_step = max(e["step"] for e in received if e["type"] == "step_delta")
    assert stored.result == "".join(e["text"] for e in received if e["type"] == "step_delta" and e["step"] == final_step)
    assert stored.result.startswith("Done in 3 steps") and received[-1]["result"] == stored.result
    steps = list(stored.steps.order_by("index"))
    assert [s.kind for s in steps] == ["model", "tool", "model", "tool", "model", "tool", "model"]
    assert all(s.status == "succeeded" for s in steps)
    assert Artifact.objects.filter(run=stored).count() == 1

    # The ledger has one row per model step, and the run's totals are theirs.
    rows = UsageRecord.objects.filter(user=alice, kind="agent")
    assert rows.count() == sum(1 for s in steps if s.kind == "model")
    assert sum(r.total_tokens for r in rows) == stored.tokens == sum(s.tokens for s in steps) > 0
    assert sum((r.cost_usd for r in rows), Decimal(0)) == stored.cost_usd
    assert str(stored.cost_usd) == received[-1]["cost_usd"]

    # Re-attaching at any cursor gives exactly what came after it.
    middle = received[len(received) // 2]
    again = sse_run_events(live_app.url, token, run["id"], after=middle["cursor"])
    assert again == received[len(received) // 2 + 1 :]


def test_the_websocket_follows_a_run_and_resumes_at_a_cursor(live_app, token):
    run = start(live_app.url, token, goal="Work out 2 ** 10 /slow 20")

    async def follow(after: str, stop_after: int | None = None) -> list[dict]:
        url = live_app.url.replace("http", "ws") + "/ws/chat/"
        async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
            await ws.send(json.dumps({"type": "attach_run", "run": run["id"], "after": after}))
            out: list[dict] = []
            while True:
                event = json.loads(await asyncio.wait_for(ws.recv(), 30))
                if event.get("run") != run["id"] or event["type"] == "run":
                    continue  # notices of the user's runs, not the log
                out.append(event)
                if event["type"] == "run_finished" or (stop_after and len(out) >= stop_after):
                    return out

    first = asyncio.run(follow("0-0", stop_after=4))
    rest = asyncio.run(follow(first[-1]["cursor"]))
    received = first + rest
    assert_in_order_once(received)
    assert received[0]["type"] == "run_started" and received[-1]["type"] == "run_finished"
    assert received[-1]["status"] == "succeeded"
    assert received == sse_run_events(live_app.url, token, run["id"])


def test_nobody_else_can_see_follow_cancel_or_approve_a_run(live_app, token, bob):
    run = start(live_app.url, token, goal="Slowly count /slow 50")
    other = ApiToken.issue(bob, "other")[1]
    for method, path in [
        ("GET", f"/api/runs/{run['id']}"),
        ("GET", f"/api/runs/{run['id']}/events"),
        ("POST", f"/api/runs/{run['id']}/cancel"),
        ("POST", f"/api/runs/{run['id']}/approvals/1"),
        ("GET", f"/api/runs/{run['id']}/artifacts/report.md"),
        ("GET", f"/api/conversations/{run['conversation']}/runs"),
        ("POST", f"/api/conversations/{run['conversation']}/runs"),
    ]:
        response = api(live_app.url, other, method, path, json={"goal": "x", "decision": "approve"} if method == "POST" else None)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["error"]["code"] == "not_found"
    cancelled = api(live_app.url, token, "POST", f"/api/runs/{run['id']}/cancel")
    assert cancelled.status_code == 202


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({}, "invalid_input"),
        ({"goal": ""}, "invalid_input"),
        ({"goal": ["list"]}, "invalid_input"),
        ({"goal": "x" * 5000}, "message_too_long"),
        ({"goal": "ok", "model": 3}, "invalid_input"),
        ({"goal": "ok", "model": "no such model"}, "unknown_model"),
    ],
)
def test_bad_starts_are_refused_clearly_and_store_nothing(live_app, token, body, code):
    conversation = new_conversation(live_app.url, token)
    response = api(live_app.url, token, "POST", f"/api/conversations/{conversation}/runs", json=body)
    assert response.status_code in {400, 413}, response.text
    assert response.json()["error"]["code"] == code
    assert not AgentRun.objects.exists()


def test_bad_cursors_and_decisions_are_refused(live_app, token):
    run = start(live_app.url, token, goal="Slowly count /slow 50")
    assert api(live_app.url, token, "GET", f"/api/runs/{run['id']}/events?after=abc").status_code == 400
    assert api(live_app.url, token, "POST", f"/api/runs/{run['id']}/approvals/999999", json={"decision": "maybe"}).status_code == 400
    missing = api(live_app.url, token, "POST", f"/api/runs/{run['id']}/approvals/999999", json={"decision": "approve"})
    assert missing.status_code == 404
    assert api(live_app.url, token, "POST", f"/api/runs/{run['id']}/cancel").status_code == 202
    assert sse_run_events(live_app.url, token, run["id"])[-1]["status"] == "cancelled"
    again = api(live_app.url, token, "POST", f"/api/runs/{run['id']}/cancel")
    assert again.status_code == 409 and again.json()["error"]["code"] == "run_finished"


def test_cancel_stops_a_running_run_within_two_seconds(live_app, token):
    run = start(live_app.url, token, goal="Write slowly about parley /slow 300")
    seen = sse_run_events(live_app.url, token, run["id"], stop_after=12)
    assert seen[-1]["type"] != "run_finished"
    asked = time.monotonic()
    assert api(live_app.url, token, "POST", f"/api/runs/{run['id']}/cancel").status_code == 202
    rest = sse_run_events(live_app.url, token, run["id"], after=seen[-1]["cursor"])
    took = time.monotonic() - asked
    assert rest[-1]["type"] == "run_finished" and rest[-1]["status"] == "cancelled"
    assert took < 2.0, took
    stored = AgentRun.objects.get(pk=run["id"])
    assert stored.status == "cancelled" and stored.cancel_requested and stored.finished
    # What it did before the cancel is kept, and charged: the step that was cut is in the ledger.
    assert stored.steps.filter(status="succeeded").exists()
    assert UsageRecord.objects.filter(kind="agent").count() == stored.steps.filter(kind="model").count()


def test_a_worker_killed_mid_step_leaves_the_run_to_another_which_never_repeats_the_email(live_factory, alice, tmp_path):
    """SIGKILL (the whole worker, like a lost host) in the model step after the approved e-mail."""
    alice.user_permissions.add(Permission.objects.get(codename="use_email_tool"))
    mailbox = tmp_path / "mail"
    app = live_factory(
        PARLEY_CELERY_QUEUE=f"kill-{uuid.uuid4().hex[:8]}", EMAIL_BACKEND="django.core.mail.backends.filebased.EmailBackend",
        EMAIL_FILE_PATH=str(mailbox), PARLEY_RUN_LEASE_SECONDS="2", PARLEY_REAP_SECONDS="1",
    )
    app.start_daphne()
    first_worker = app.start_worker("first")
    token = ApiToken.issue(alice, "kill")[1]
    run = start(app.url, token, goal="Report on parley, compute 8 * 8, mail it to pat@example.com /slow 150")

    before = sse_run_events(app.url, token, run["id"], stop_after=10_000, until="approval_requested")
    approval = AgentStep.objects.get(run_id=run["id"], kind="approval")
    decided = api(app.url, token, "POST", f"/api/runs/{run['id']}/approvals/{approval.pk}", json={"decision": "approve"})
    assert decided.status_code == 200, decided.text
    # Follow until the step after the e-mail is under way, then kill the worker in the middle of it.
    during = sse_run_events(app.url, token, run["id"], after=before[-1]["cursor"], until="step_delta")
    assert any(e["type"] == "tool_result" and e["ok"] for e in during)
    first_worker.kill()
    assert len(list(mailbox.iterdir())) == 1

    app.start_worker("second")
    after = sse_run_events(app.url, token, run["id"], after=during[-1]["cursor"])
    received = before + during + after
    assert_in_order_once(received)
    assert received[-1]["type"] == "run_finished" and received[-1]["status"] == "succeeded", received[-1]
    assert len(list(mailbox.iterdir())) == 1  # the e-mail went once, whoever finished the run

    stored = AgentRun.objects.get(pk=run["id"])
    assert stored.status == "succeeded"
    if not settings.CELERY_BROKER_URL.startswith("amqp"):
        # Redis holds a lost worker's task for its visibility timeout: the reaper resumed the run.
        # RabbitMQ gives it back at once, to whichever comes first (tests/test_rabbitmq.py).
        assert stored.attempts >= 1
    steps = list(stored.steps.order_by("index"))
    lost = [s for s in steps if s.status == "failed"]
    assert [(s.kind, s.result) for s in lost] == [("model", {"code": "interrupted"})]
    assert [s.tool for s in steps if s.kind == "tool"].count("send_email") == 1
    # Both workers' model steps are in the ledger, the lost one too.
    assert UsageRecord.objects.filter(kind="agent").count() == sum(1 for s in steps if s.kind == "model")


def test_restarting_the_web_process_does_not_touch_a_run(live_factory, alice):
    app = live_factory(PARLEY_CELERY_QUEUE=f"restart-{uuid.uuid4().hex[:8]}")
    server = app.start_daphne()
    app.start_worker()
    token = ApiToken.issue(alice, "restart")[1]
    run = start(app.url, token, goal="Compute 3 * 3 about parley /slow 100")
    before = sse_run_events(app.url, token, run["id"], stop_after=8)
    server.kill()  # the web process dies; the run lives in the worker
    app.servers.remove(server)
    app.start_daphne(port=server.port)
    after = sse_run_events(app.url, token, run["id"], after=before[-1]["cursor"])
    received = before + after
    assert_in_order_once(received)
    assert received[-1]["type"] == "run_finished" and received[-1]["status"] == "succeeded"
    assert received == sse_run_events(app.url, token, run["id"])


def test_a_rejected_e_mail_is_never_sent_and_the_run_goes_on(live_app, token, alice):
    alice.user_permissions.add(Permission.objects.get(codename="use_email_tool"))
    run = start(live_app.url, token, goal="Report on parley and mail it to pat@example.com")
    before = sse_run_events(live_app.url, token, run["id"], until="approval_requested")
    assert before[-1]["tool"] == "send_email" and before[-1]["arguments"]["to"] == "pat@example.com"
    assert AgentRun.objects.get(pk=run["id"]).status == "awaiting_approval"
    approval = AgentStep.objects.get(run_id=run["id"], kind="approval")
    decided = api(live_app.url, token, "POST", f"/api/runs/{run['id']}/approvals/{approval.pk}",
                  json={"decision": "reject", "note": "not today"})
    assert decided.status_code == 200 and decided.json()["step"]["status"] == "rejected"
    after = sse_run_events(live_app.url, token, run["id"], after=before[-1]["cursor"])
    decided_events = [e for e in after if e["type"] == "approval_decided"]
    assert [(e["decision"], e["note"], e["step"]) for e in decided_events] == [("reject", "not today", approval.index)]
    assert after[-1]["type"] == "run_finished" and after[-1]["status"] == "succeeded"
    approval.refresh_from_db()
    assert approval.decided_by == alice and approval.decided_at is not None
    assert not AgentStep.objects.filter(run_id=run["id"], kind="tool", tool="send_email").exists()


def test_a_tool_the_user_may_not_use_is_refused_and_shown(live_factory, alice, tmp_path):
    port = free_port()
    fake = LiveProcess("fake-openai", [sys.executable, "-m", "tests.fakes.openai_server", "--port", str(port), "--tokens", "5"],
                       {"PYTHONUNBUFFERED": "1", "PATH": "/usr/bin:/bin"}, tmp_path / "fake.log", port=port).start()
    fake.wait_for_port()
    try:
        base_url = f"http://127.0.0.1:{port}/v1"
        name = "fake#scenario=tool_call&tool_name=send_email&tool_arguments=%7B%7D"
        ChatModel.objects.create(name=name, label="Fake", provider="openai", base_url=base_url)
        app = live_factory(PARLEY_CELERY_QUEUE=f"refuse-{uuid.uuid4().hex[:8]}", OPENAI_BASE_URL=base_url, OPENAI_API_KEY="sk-test")
        app.start_daphne()
        app.start_worker()
        token = ApiToken.issue(alice, "refuse")[1]
        conversation = api(app.url, token, "POST", "/api/conversations/", json={"model": name}).json()["id"]
        run = start(app.url, token, goal="Mail someone", conversation=conversation)
        received = sse_run_events(app.url, token, run["id"])
    finally:
        fake.stop()
    call = next(e for e in received if e["type"] == "tool_call")
    result = next(e for e in received if e["type"] == "tool_result")
    assert call["tool"] == "send_email" and result["ok"] is False and "may not use the send_email tool" in result["error"]
    assert received[-1]["status"] == "succeeded"
    step = AgentStep.objects.get(run_id=run["id"], kind="tool")
    assert step.status == "refused" and step.idempotency_key is None


def test_per_run_limits_end_a_run_in_the_worker(live_app, token):
    Plan.objects.filter(name="Free").update(run_max_steps=3)
    run = start(live_app.url, token, goal="Compute 4 * 4")
    received = sse_run_events(live_app.url, token, run["id"])
    assert received[-1]["status"] == "failed" and received[-1]["error_code"] == "run_limit"
    assert received[-1]["error_text"] == "The run reached its limit of 3 steps."
    assert AgentRun.objects.get(pk=run["id"]).steps.count() == 3


def test_a_killed_pool_process_s_run_is_delivered_again_and_goes_on_without_the_reaper(live_factory, alice):
    """SIGKILL of the process running the task (the worker's pool child): Celery delivers the task
    again (reject_on_worker_lost), and it waits out the dead process's lease; no reaper runs here."""
    app = live_factory(PARLEY_CELERY_QUEUE=f"child-{uuid.uuid4().hex[:8]}", PARLEY_RUN_LEASE_SECONDS="2",
                       PARLEY_REAP_SECONDS="3600")
    app.start_daphne()
    worker = app.start_worker()
    token = ApiToken.issue(alice, "child")[1]
    run = start(app.url, token, goal="Compute 6 * 6 about parley /slow 150")
    before = sse_run_events(app.url, token, run["id"], until="step_delta")
    children = subprocess.run(["pgrep", "-P", str(worker.process.pid)], capture_output=True, text=True).stdout.split()
    assert children
    for pid in children:
        os.kill(int(pid), signal.SIGKILL)
    after = sse_run_events(app.url, token, run["id"], after=before[-1]["cursor"])
    received = before + after
    assert_in_order_once(received)
    assert received[-1]["type"] == "run_finished" and received[-1]["status"] == "succeeded", received[-1]
    stored = AgentRun.objects.get(pk=run["id"])
    assert stored.attempts == 0  # taken up by the delivery again, not by the reaper
    assert [(s.kind, s.result) for s in stored.steps.filter(status="failed")] == [("model", {"code": "interrupted"})]
