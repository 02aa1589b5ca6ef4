"""The runner in this process, as a worker runs it, against the real database and Redis: tool
refusals, approvals, limits, provider errors, the ledger, and what a lost worker leaves behind.

Only the broker is replaced: sending a run's task records its id, and each test executes the run
when a worker would (tests/test_agent_runs_live.py has the real worker).
"""

import asyncio
from datetime import timedelta
from decimal import Decimal

import orjson
import pytest
from django.contrib.auth.models import Permission
from django.core import mail
from django.db import connection
from django.utils import timezone

from accounts.models import Plan, SiteSettings
from accounts.plans import limits_for
from agents import actions, reaper, runner
from agents.lease import Lease
from agents.models import AgentRun, AgentStep
from billing import calls
from billing.models import UsageRecord
from chat.actions import ActionError, create_conversation
from chat.models import ChatModel
from parley.redis_clients import sync_client_for
from streaming.writer import SyncWriter
from tests.fakes import Scenario
from tests.fakes.openai_server import OpenAIFake

pytestmark = pytest.mark.django_db(transaction=True)

EMAIL_GOAL = "Summarize parley, compute 3 * 5 and mail it to pat@example.com"


@pytest.fixture(autouse=True)
def sent_tasks(monkeypatch) -> list[int]:
    sent: list[int] = []
    monkeypatch.setattr(actions, "enqueue_run", sent.append)
    monkeypatch.setattr(reaper, "enqueue_run", sent.append)
    return sent


@pytest.fixture
def may_email(alice):
    alice.user_permissions.add(Permission.objects.get(codename="use_email_tool"))
    return alice


def start(user, goal: str, model: str | None = None) -> AgentRun:
    conversation = create_conversation(user, model)
    return actions.start_run(user, conversation.pk, goal)


def work(run: AgentRun) -> AgentRun:
    runner.execute(run.pk, "task-1")
    run.refresh_from_db()
    return run


async def in_thread(fn, *args):
    """`fn` on a thread of its own, as a worker runs it; that thread's database connection is
    closed after it, so that no session outlives the test."""

    def closing():
        try:
            return fn(*args)
        finally:
            connection.close()

    return await asyncio.to_thread(closing)


def steps_of(run: AgentRun) -> list[AgentStep]:
    return list(run.steps.order_by("index"))


def logged(run: AgentRun) -> list[dict]:
    return [orjson.loads(entry.payload) for entry in SyncWriter().read_run(run.pk)]


def test_a_risky_call_waits_for_approval_and_runs_once_when_approved(may_email, sent_tasks):
    run = start(may_email, EMAIL_GOAL)
    assert sent_tasks == [run.pk]
    run = work(run)
    assert run.status == "awaiting_approval"
    approval = steps_of(run)[-1]
    assert (approval.kind, approval.status, approval.tool) == ("approval", "awaiting_approval", "send_email")
    assert approval.arguments["to"] == "pat@example.com" and approval.expires > timezone.now()
    assert mail.outbox == []
    asked = [e for e in logged(run) if e["type"] == "approval_requested"]
    assert asked and asked[0]["arguments"] == approval.arguments

    # A redelivered task while it waits does nothing.
    assert work(run).status == "awaiting_approval"

    actions.decide(may_email, run.pk, approval.pk, "approve", "go ahead")
    approval.refresh_from_db()
    assert approval.status == "succeeded" and approval.decided_by == may_email and approval.decided_at
    assert sent_tasks == [run.pk, run.pk]
    run = work(run)
    assert run.status == "succeeded", run.error_text
    assert len(mail.outbox) == 1 and mail.outbox[0].to == ["pat@example.com"]
    email_step = next(s for s in steps_of(run) if s.tool == "send_email" and s.kind == "tool")
    assert email_step.idempotency_key == f"run-{run.pk}-step-{email_step.index}"
    # Redelivered once more after the end: nothing runs again.
    assert work(run).status == "succeeded" and len(mail.outbox) == 1
    with pytest.raises(ActionError) as again:
        actions.decide(may_email, run.pk, approval.pk, "approve")
    assert again.value.code == "not_awaiting_approval"


def test_a_rejected_call_is_not_made_and_the_model_is_told(may_email):
    run = work(start(may_email, EMAIL_GOAL))
    approval = steps_of(run)[-1]
    actions.decide(may_email, run.pk, approval.pk, "reject", "not to Pat")
    run = work(run)
    assert run.status == "succeeded"
    assert mail.outbox == []
    assert not run.steps.filter(kind="tool", tool="send_email").exists()
    decided = [e for e in logged(run) if e["type"] == "approval_decided"]
    assert decided == [{**decided[0], "decision": "reject", "note": "not to Pat", "step": approval.index}]


def test_an_approval_that_expires_counts_as_rejected(may_email, sent_tasks):
    run = work(start(may_email, EMAIL_GOAL))
    AgentStep.objects.filter(run=run, kind="approval").update(expires=timezone.now() - timedelta(seconds=1))
    assert reaper.reap_runs() == 1
    approval = run.steps.get(kind="approval")
    assert approval.status == "rejected" and approval.decided_by is None and "expired" in approval.note
    with pytest.raises(ActionError):
        actions.decide(may_email, run.pk, approval.pk, "approve")
    assert work(run).status == "succeeded" and mail.outbox == []


def test_cancel_while_waiting_ends_the_run_at_once(may_email):
    run = work(start(may_email, EMAIL_GOAL))
    cancelled = actions.cancel_run(may_email, run.pk)
    assert cancelled.status == "cancelled"
    assert run.steps.get(kind="approval").status == "rejected"
    assert logged(run)[-1]["type"] == "run_finished" and logged(run)[-1]["status"] == "cancelled"
    assert work(run).status == "cancelled" and mail.outbox == []


def test_without_the_permission_e_mail_is_not_offered_and_a_call_to_it_is_refused(alice, settings):
    async def scenario():
        arguments = '{"to": "x@example.com", "subject": "hi", "body": "hello"}'
        async with OpenAIFake(Scenario("tool_call", tokens=4, tool_name="send_email", tool_arguments=arguments)) as fake:
            settings.OPENAI_BASE_URL, settings.OPENAI_API_KEY = fake.base_url, "sk-test"
            await ChatModel.objects.acreate(name="fake-gpt", label="Fake", provider="openai", base_url=fake.base_url)
            run = await in_thread(start, alice, "Mail x", "fake-gpt")
            return await in_thread(work, run), fake.requests

    run, requests = asyncio.run(scenario())
    offered = [tool["function"]["name"] for tool in requests[0].json["tools"]]
    assert "send_email" not in offered and "calculate" in offered
    assert run.status == "succeeded"
    refused = run.steps.get(kind="tool")
    assert refused.status == "refused" and "may not use the send_email tool" in refused.error
    result = next(e for e in logged(run) if e["type"] == "tool_result")
    assert result["ok"] is False and "may not use" in result["error"]
    # The model read the refusal as the call's result.
    sent_back = requests[1].json["messages"]
    assert sent_back[-1]["role"] == "tool" and "may not use" in sent_back[-1]["content"]
    assert mail.outbox == []


def test_invalid_arguments_go_back_to_the_model_as_a_tool_error(alice, settings):
    async def scenario():
        async with OpenAIFake(Scenario("tool_call", tokens=4, tool_name="calculate", tool_arguments='{"expr": "1+1"')) as fake:
            settings.OPENAI_BASE_URL, settings.OPENAI_API_KEY = fake.base_url, "sk-test"
            await ChatModel.objects.acreate(name="fake-gpt", label="Fake", provider="openai", base_url=fake.base_url)
            run = await in_thread(start, alice, "Add", "fake-gpt")
            return await in_thread(work, run)

    run = asyncio.run(scenario())
    assert run.status == "succeeded"
    step = run.steps.get(kind="tool")
    assert step.status == "refused" and "JSON object" in step.error and step.arguments == {"raw": '{"expr": "1+1"'}


def test_provider_errors_fail_the_step_and_the_run_says_why(alice, settings):
    async def scenario(kind: str, times: int):
        async with OpenAIFake(Scenario(kind, tokens=4, times=times)) as fake:
            settings.OPENAI_BASE_URL, settings.OPENAI_API_KEY, settings.PROVIDER_MAX_RETRIES = fake.base_url, "sk-test", 0
            await ChatModel.objects.aupdate_or_create(name="fake-gpt", defaults={"label": "Fake", "provider": "openai", "base_url": fake.base_url})
            run = await in_thread(start, alice, "Anything", "fake-gpt")
            return await in_thread(work, run)

    failed = asyncio.run(scenario("unauthorized", 0))
    assert (failed.status, failed.error_code) == ("failed", "auth_failed") and failed.error_text
    assert failed.steps.get().status == "failed"
    settings.PARLEY_RETRY_ATTEMPTS = 1  # no retry within a step: the step fails, and the run tries again
    recovered = asyncio.run(scenario("server_error", 1))
    assert recovered.status == "succeeded"
    assert [s.status for s in steps_of(recovered)] == ["failed", "succeeded"]


def test_a_step_retries_a_failure_before_its_first_token_and_bills_each_attempt(alice, settings):
    settings.PARLEY_RETRY_ATTEMPTS, settings.PARLEY_RETRY_BASE_SECONDS = 3, 0.01

    async def scenario():
        async with OpenAIFake(Scenario("server_error", tokens=4, times=1)) as fake:
            settings.OPENAI_BASE_URL, settings.OPENAI_API_KEY = fake.base_url, "sk-test"
            await ChatModel.objects.acreate(name="fake-gpt", label="Fake", provider="openai", base_url=fake.base_url)
            run = await in_thread(start, alice, "Anything", "fake-gpt")
            return await in_thread(work, run), len(fake.requests)

    run, requests = asyncio.run(scenario())
    assert run.status == "succeeded" and requests == 2
    assert [s.status for s in steps_of(run)] == ["succeeded"]
    rows = UsageRecord.objects.filter(user=alice, kind="agent").order_by("id")
    assert [(row.attempt, row.outcome, row.error_code, row.total_tokens) for row in rows][:1] == [
        (1, "failed", "provider_unavailable", 0)
    ]
    assert rows[1].attempt == 2 and rows[1].outcome == "complete" and rows[1].total_tokens > 0


def test_per_run_limits_stop_a_run_with_a_clear_reason(alice):
    Plan.objects.filter(name="Free").update(run_max_steps=2)
    run = work(start(alice, "Compute 2 * 2"))
    assert (run.status, run.error_code) == ("failed", "run_limit")
    assert run.error_text == "The run reached its limit of 2 steps." and run.steps.count() == 2
    assert run.limits["max_steps"] == 2

    Plan.objects.filter(name="Free").update(run_max_steps=None)
    site = SiteSettings.current()
    site.run_max_tokens = 50
    site.save()
    run = work(start(alice, "Compute 2 * 2"))
    assert (run.status, run.error_code) == ("failed", "run_limit") and "tokens" in run.error_text
    assert run.tokens >= 50


def test_the_run_ledger_matches_its_model_steps(alice):
    ChatModel.objects.filter(provider="demo").update(input_price_per_million=Decimal("1"), output_price_per_million=Decimal("2"))
    run = work(start(alice, "Compute 6 * 6"))
    assert run.status == "succeeded"
    model_steps = [s for s in steps_of(run) if s.kind == "model"]
    rows = list(UsageRecord.objects.filter(kind="agent", user=alice).order_by("id"))
    assert [(r.total_tokens, r.cost_usd) for r in rows] == [(s.tokens, s.cost_usd) for s in model_steps]
    assert run.tokens == sum(s.tokens for s in model_steps) and run.cost_usd == sum(r.cost_usd for r in rows) > 0
    assert all(r.conversation_id == run.conversation_id for r in rows)


def test_a_run_taken_up_after_its_worker_was_lost_never_repeats_a_side_effect(may_email):
    run = work(start(may_email, EMAIL_GOAL))
    approval = steps_of(run)[-1]
    actions.decide(may_email, run.pk, approval.pk, "approve")
    # The worker that took the approved run up recorded the e-mail step and its key, then died.
    AgentRun.objects.filter(pk=run.pk).update(status="running")
    AgentStep.objects.create(
        run=run, index=approval.index + 1, kind="tool", title="Sending an e-mail", tool="send_email",
        call_id=approval.call_id, arguments=approval.arguments, idempotency_key=f"run-{run.pk}-step-{approval.index + 1}",
    )
    run = work(run)
    assert run.status == "succeeded"
    lost = run.steps.get(kind="tool", tool="send_email")
    assert lost.status == "failed" and "not run again" in lost.error
    assert mail.outbox == []


def test_a_lost_model_step_is_charged_and_asked_again(alice):
    # A run whose worker died in its first model step, holding that step's reservation.
    lost = start(alice, "Compute 4 * 4")
    AgentRun.objects.filter(pk=lost.pk).update(status="running", started=timezone.now())
    admitted = calls.admit(alice.pk, limits_for(alice.pk)[1], ChatModel.objects.get(provider="demo"), "", [("user", "x")],
                           kind="agent", background=True)
    AgentStep.objects.create(run=lost, index=1, kind="model", title="Planning",
                             quota_claim=admitted.reservation.claim(admitted.call.prompt_estimate))
    lost = work(lost)
    assert lost.status == "succeeded"
    first = steps_of(lost)[0]
    assert first.status == "failed" and first.result == {"code": "interrupted"} and first.tokens > 0
    rows = list(UsageRecord.objects.filter(kind="agent").order_by("id"))
    assert len(rows) == sum(1 for s in steps_of(lost) if s.kind == "model")
    assert rows[0].outcome == "interrupted" and rows[0].estimated


def test_the_reaper_resumes_a_run_without_a_worker_and_ends_it_when_it_keeps_dying(alice, sent_tasks, settings):
    settings.PARLEY_RUN_RESUMES = 1
    run = start(alice, "Compute 9 * 9")
    old = timezone.now() - timedelta(minutes=5)
    AgentRun.objects.filter(pk=run.pk).update(status="running", updated=old, started=old)
    held = Lease(run.pk)
    assert held.acquire()
    assert reaper.reap_runs() == 0  # a worker holds it: leave it alone
    held.release()
    assert reaper.reap_runs() == 1
    run.refresh_from_db()
    assert run.attempts == 1 and run.status == "running" and sent_tasks[-1] == run.pk
    AgentRun.objects.filter(pk=run.pk).update(updated=old)
    assert reaper.reap_runs() == 1
    run.refresh_from_db()
    assert (run.status, run.error_code) == ("interrupted", "interrupted") and "not resumed again" in run.error_text
    assert logged(run)[-1]["type"] == "run_finished" and logged(run)[-1]["status"] == "interrupted"


def test_two_deliveries_at_once_execute_a_run_once(alice):
    run = start(alice, "Compute 5 * 5")
    held = Lease(run.pk)
    assert held.acquire()
    try:
        assert work(run).status == "queued"  # the second delivery left it to the first
        AgentRun.objects.filter(pk=run.pk).update(status="running")
        assert runner.execute(run.pk) is False  # running under a lease: ask again once it could lapse
    finally:
        held.release()
    assert runner.execute(run.pk) is True
    run.refresh_from_db()
    assert run.status == "succeeded"


def test_starting_is_checked(alice, bob, settings):
    settings.PARLEY_MAX_ACTIVE_RUNS = 2
    conversation = create_conversation(alice)
    for _ in range(2):
        actions.start_run(alice, conversation.pk, "Compute 1 + 1")
    with pytest.raises(ActionError) as refused:
        actions.start_run(alice, conversation.pk, "Compute 1 + 1")
    assert refused.value.code == "too_many_runs"
    with pytest.raises(ActionError) as foreign:
        actions.start_run(bob, conversation.pk, "Compute 1 + 1")
    assert foreign.value.code == "not_found"
    alice.suspended = True
    alice.save()
    with pytest.raises(ActionError) as suspended:
        actions.start_run(alice, create_conversation(alice).pk, "x")
    assert suspended.value.code == "suspended"


def test_the_cancel_flag_is_read_from_redis(alice, settings):
    run = start(alice, "Compute 7 * 7")
    sync_client_for(settings.REDIS_URL).set(f"{settings.PARLEY_KEY_PREFIX}:run:{run.pk}:cancel", "1")
    assert work(run).status == "cancelled"


@pytest.fixture
def slow_tool():
    """A tool that works for `seconds` and never looks at its run's cancel flag: the runner itself
    must stop waiting for it. The fixture's value is set once it has started."""
    import threading
    import time as clock

    from agents.registry import REGISTRY
    from agents.tools import Tool

    started = threading.Event()

    def wait(call, arguments):
        started.set()
        deadline = clock.monotonic() + arguments["seconds"]
        while clock.monotonic() < deadline:
            clock.sleep(0.05)
        return {"waited": arguments["seconds"]}

    REGISTRY["wait"] = Tool(
        name="wait", title="Waiting", description="Wait.", run=wait, timeout_seconds=1.0,
        parameters={"type": "object", "properties": {"seconds": {"type": "number"}}, "required": ["seconds"]},
    )
    yield started
    del REGISTRY["wait"]


def run_with_fake_tool_call(alice, settings, arguments: str, while_running=None) -> tuple[AgentRun, float]:
    import threading
    import time as clock

    async def scenario():
        async with OpenAIFake(Scenario("tool_call", tokens=4, tool_name="wait", tool_arguments=arguments)) as fake:
            settings.OPENAI_BASE_URL, settings.OPENAI_API_KEY = fake.base_url, "sk-test"
            await ChatModel.objects.acreate(name="fake-gpt", label="Fake", provider="openai", base_url=fake.base_url)
            run = await in_thread(start, alice, "Wait", "fake-gpt")
            if while_running:
                threading.Thread(target=while_running, args=[run]).start()
            began = clock.monotonic()
            done = await in_thread(work, run)
            return done, clock.monotonic() - began

    return asyncio.run(scenario())


def test_a_tool_that_overruns_its_timeout_fails_and_the_run_goes_on(alice, settings, slow_tool):
    run, _ = run_with_fake_tool_call(alice, settings, '{"seconds": 3}')
    assert run.status == "succeeded"
    step = run.steps.get(kind="tool")
    assert step.status == "failed" and "longer than 1 seconds" in step.error


def test_cancel_reaches_a_long_tool_call(alice, settings, slow_tool):
    def cancel(run):
        assert slow_tool.wait(10)  # cancel while the tool works
        try:
            actions.cancel_run(alice, run.pk)
        finally:
            connection.close()  # this timer thread's own

    run, took = run_with_fake_tool_call(alice, settings, '{"seconds": 0.95}', while_running=cancel)
    assert run.status == "cancelled" and took < 2.0
    assert run.steps.get(kind="tool").error == "Cancelled while the tool ran."


def test_cancel_reaches_a_model_that_has_not_said_a_word_yet(alice, settings):
    import threading
    import time as clock

    async def scenario():
        async with OpenAIFake(Scenario("slow_first", tokens=4, delay=20)) as fake:
            settings.OPENAI_BASE_URL, settings.OPENAI_API_KEY = fake.base_url, "sk-test"
            await ChatModel.objects.acreate(name="fake-gpt", label="Fake", provider="openai", base_url=fake.base_url)
            run = await in_thread(start, alice, "Think hard", "fake-gpt")
            threading.Timer(0.5, lambda: sync_client_for(settings.REDIS_URL).set(
                f"{settings.PARLEY_KEY_PREFIX}:run:{run.pk}:cancel", "1")).start()
            began = clock.monotonic()
            done = await in_thread(work, run)
            return done, clock.monotonic() - began

    run, took = asyncio.run(scenario())
    assert run.status == "cancelled" and took < 2.0, took
    step = run.steps.get()
    assert step.status == "failed" and step.error == "Cancelled."
    assert UsageRecord.objects.filter(kind="agent").count() == 1  # the cut call is in the ledger, at what it cost
