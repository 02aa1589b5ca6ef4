"""The AG-UI door driven by AG-UI's own client: `@ag-ui/client`'s HttpAgent run by Node against real
daphne, a real Celery worker and Redis; every event checked against `@ag-ui/core`'s zod schemas and
the client's own order rules (tests/node/ag_ui_run.mjs). Node and the packages must be there: a
missing one fails these tests, it does not skip them."""

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission

from accounts.models import ApiToken, Plan
from agents.models import AgentRun, AgentStep
from chat.models import Conversation, Source

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tests" / "node" / "ag_ui_run.mjs"


@pytest.fixture
def token(alice) -> str:
    return ApiToken.issue(alice, "ag-ui", scopes=[ApiToken.Scope.GATEWAY])[1]


def node_run(live_app, token: str, scenario: str, goal: str, thread: str, **env: str) -> dict:
    node = shutil.which("node")
    assert node, "Node.js is needed for the AG-UI tests (the `node` command)"
    assert (ROOT / "node_modules" / "@ag-ui" / "client").is_dir(), "npm package @ag-ui/client is missing: run npm ci"
    done = subprocess.run(
        [node, str(SCRIPT), scenario, goal], cwd=ROOT, capture_output=True, text=True, timeout=180,
        env={**os.environ, "PARLEY_URL": live_app.url, "PARLEY_TOKEN": token, "AG_UI_THREAD": thread, **env},
    )
    assert done.returncode == 0, done.stderr[-4000:] + done.stdout[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def types(events: list[dict]) -> list[str]:
    return [event["type"] for event in events]


def test_a_run_streams_as_ag_ui_events_to_its_end(live_app, token, alice):
    thread = f"thread-{uuid.uuid4()}"
    seen = node_run(live_app, token, "run", "Find what we said about parley and compute 12 * 7", thread)
    events = seen["events"]
    assert seen["error"] is None and seen["outcome"]["outcome"] == "success"
    assert types(events)[:2] == ["RUN_STARTED", "STATE_SNAPSHOT"] and types(events)[-1] == "RUN_FINISHED"
    assert [e["toolCallName"] for e in events if e["type"] == "TOOL_CALL_START"] == ["search_conversations", "calculate", "write_report"]
    results = [json.loads(e["content"]) for e in events if e["type"] == "TOOL_CALL_RESULT"]
    assert {"expression": "12 * 7", "result": "84"} in results
    run = AgentRun.objects.get(conversation__external_id=thread)
    steps = list(run.steps.order_by("index"))
    assert types(events).count("STEP_STARTED") == types(events).count("STEP_FINISHED") == len(steps) == 7
    # The final model step's text is the run's result, streamed as one text message.
    final_text = [e for e in events if e["type"] == "TEXT_MESSAGE_CONTENT"][-1]["messageId"]
    streamed = "".join(e["delta"] for e in events if e["type"] == "TEXT_MESSAGE_CONTENT" and e["messageId"] == final_text)
    assert streamed == run.result == seen["outcome"]["result"] and run.result.startswith("Done in 3 steps")
    # The client's state, built from the snapshot and its JSON Patches, is the run's progress.
    assert seen["state"] == {
        "run": run.pk, "status": "succeeded", "stepsDone": 7, "tokens": run.tokens, "costUsd": str(run.cost_usd),
        "percent": 100, "current": "",
    }
    assert run.tokens > 0
    # The client's messages: each model step's message holds the tool calls it made, each answered.
    called = [m for m in seen["messages"] if m["role"] == "assistant" and m.get("toolCalls")]
    assert [[c["function"]["name"] for c in m["toolCalls"]] for m in called] == [["search_conversations"], ["calculate"], ["write_report"]]
    answered = {m["toolCallId"] for m in seen["messages"] if m["role"] == "tool"}
    assert answered == {c["id"] for m in called for c in m["toolCalls"]}
    assert seen["messages"][-1] == {"id": final_text, "role": "assistant", "content": run.result}
    conversation = Conversation.objects.get(owner=alice, source=Source.AG_UI, external_id=thread)
    assert run.conversation == conversation and run.goal == "Find what we said about parley and compute 12 * 7"


def test_a_run_that_needs_approval_ends_with_an_interrupt_and_the_answer_continues_it(live_app, token, alice):
    alice.user_permissions.add(Permission.objects.get(codename="use_email_tool"))
    thread = f"thread-{uuid.uuid4()}"
    seen = node_run(live_app, token, "approval", "Report on parley and mail it to pat@example.com", thread)
    first, second, interrupt = seen["first"], seen["second"], seen["interrupt"]
    run = AgentRun.objects.get(conversation__external_id=thread)
    approval = AgentStep.objects.get(run=run, kind="approval")
    assert types(first["events"])[-1] == "RUN_FINISHED" and first["outcome"]["outcome"] == "interrupt"
    assert interrupt["id"] == f"parley-run-{run.pk}-step-{approval.index}" and interrupt["reason"] == "tool_approval"
    assert interrupt["metadata"]["tool"] == "send_email" and interrupt["metadata"]["arguments"]["to"] == "pat@example.com"
    assert interrupt["responseSchema"]["required"] == ["decision"] and interrupt["expiresAt"] == approval.expires.isoformat()
    assert first["state"]["status"] == "awaiting_approval"
    # The answer went through the endpoint: the approval is the user's, and the run went on to send it.
    assert approval.decided_by == alice and approval.status == "succeeded" and approval.note == "from AG-UI"
    assert types(second["events"])[:2] == ["RUN_STARTED", "STATE_SNAPSHOT"] and types(second["events"])[-1] == "RUN_FINISHED"
    assert second["outcome"]["outcome"] == "success" and second["pending"] == []
    assert [e["toolCallName"] for e in second["events"] if e["type"] == "TOOL_CALL_START"] == ["send_email"]
    assert [e["toolCallName"] for e in first["events"] if e["type"] == "TOOL_CALL_START"] == [
        "search_conversations", "calculate", "write_report",
    ]
    assert run.status == "succeeded" and second["state"]["status"] == "succeeded"
    assert AgentStep.objects.filter(run=run, kind="tool", tool="send_email", status="succeeded").count() == 1
    assert first["events"][0]["runId"] != second["events"][0]["runId"]  # a resume is a new AG-UI run


def test_a_rejection_through_the_endpoint_is_recorded_and_nothing_is_sent(live_app, token, alice):
    alice.user_permissions.add(Permission.objects.get(codename="use_email_tool"))
    thread = f"thread-{uuid.uuid4()}"
    seen = node_run(live_app, token, "approval", "Report on parley and mail it to pat@example.com", thread, AG_UI_DECISION="reject")
    run = AgentRun.objects.get(conversation__external_id=thread)
    assert seen["second"]["outcome"]["outcome"] == "success" and run.status == "succeeded"
    assert AgentStep.objects.get(run=run, kind="approval").status == "rejected"
    assert not AgentStep.objects.filter(run=run, kind="tool", tool="send_email").exists()


def test_a_dropped_connection_resumes_with_nothing_lost_or_repeated(live_app, token):
    thread = f"thread-{uuid.uuid4()}"
    seen = node_run(live_app, token, "resume", "Work out 2 ** 10 /slow 20", thread, AG_UI_STOP_AFTER="9")
    # The script checked that the events before the drop and those after Last-Event-ID are, together,
    # exactly the run read whole, valid in the client's order; here: that the drop was mid-run.
    assert 2 < len(seen["first"]) <= 9 and seen["rest"] and types(seen["rest"])[-1] == "RUN_FINISHED"
    assert "RUN_FINISHED" not in types(seen["first"])
    assert len(seen["first"]) + len(seen["rest"]) == len(seen["whole"])


def test_a_failed_run_ends_with_run_error(live_app, token):
    Plan.objects.filter(name="Free").update(run_max_steps=3)
    thread = f"thread-{uuid.uuid4()}"
    seen = node_run(live_app, token, "run", "Compute 4 * 4", thread)
    assert types(seen["events"])[-1] == "RUN_ERROR"
    assert seen["outcome"] == {"outcome": "error", "code": "run_limit", "message": "The run reached its limit of 3 steps."}
    assert seen["state"]["status"] == "failed"


def test_a_cancelled_run_ends_with_the_cancelled_outcome(live_app, alice):
    both = ApiToken.issue(alice, "ag-ui and chat", scopes=[ApiToken.Scope.GATEWAY, ApiToken.Scope.CHAT])[1]
    seen = node_run(live_app, both, "cancel", "Write slowly about parley /slow 300", f"thread-{uuid.uuid4()}")
    assert seen["cancelStatus"] == 202
    assert seen["events"][-1]["type"] == "RUN_FINISHED" and seen["events"][-1]["outcome"] == {"type": "cancelled"}
    assert seen["outcome"]["outcome"] == "cancelled" and seen["state"]["status"] == "cancelled"
    assert AgentRun.objects.get().status == "cancelled"
