"""The AG-UI translation of a run's log, without processes: a segment is cut at its approvals, the
same log always reads the same, and a log that is gone still ends the AG-UI run."""

from gateway.ag_ui_wire import Segment, Translator
from streaming import events

RUN = 7


def log() -> list[dict]:
    made = [
        ("run_started", {"goal": "g", "model": "demo"}),
        ("step_started", {"step": 1, "kind": "model", "title": "Thinking"}),
        ("step_delta", {"step": 1, "text": "Let me"}),
        ("step_delta", {"step": 1, "text": " mail it."}),
        ("step_finished", {"step": 1, "status": "succeeded", "tokens": 10, "cost_usd": "0.00010000"}),
        ("step_started", {"step": 2, "kind": "approval", "title": "Waiting for your approval"}),
        ("approval_requested", {"step": 2, "tool": "send_email", "arguments": {"to": "a@b.c"}, "reason": "Sends mail."}),
        ("progress", {"percent": 33, "current": "Waiting for your approval"}),
        ("approval_decided", {"step": 2, "decision": "approve", "note": ""}),
        ("step_started", {"step": 3, "kind": "tool", "title": "Sending e-mail"}),
        ("tool_call", {"step": 3, "call_id": "c1", "tool": "send_email", "arguments": {"to": "a@b.c"}}),
        ("tool_result", {"step": 3, "call_id": "c1", "ok": True, "result": {"sent": True}, "error": None}),
        ("step_finished", {"step": 3, "status": "succeeded", "tokens": 0, "cost_usd": "0"}),
        ("run_finished", {"status": "succeeded", "result": "Sent.", "error_code": None, "error_text": None, "tokens": 10,
                          "cost_usd": "0.00010000"}),
    ]
    return [events.run_event(kind, RUN, seq, **fields) for seq, (kind, fields) in enumerate(made, 1)]


def read(segment: Segment, entries: list[dict]) -> list[dict]:
    translator = Translator("thread", "run-a", segment)
    out = translator.opening() if segment.after_step == 0 else []
    for event in entries:
        out += translator.feed(event)
    return out


def test_the_first_segment_ends_at_the_approval_with_its_interrupt():
    first = read(Segment(RUN), log())
    assert [e["type"] for e in first] == [
        "RUN_STARTED", "STATE_SNAPSHOT", "STATE_DELTA", "STEP_STARTED", "TEXT_MESSAGE_START", "TEXT_MESSAGE_CONTENT",
        "TEXT_MESSAGE_CONTENT", "TEXT_MESSAGE_END", "STEP_FINISHED", "STATE_DELTA", "STEP_STARTED", "STEP_FINISHED",
        "STATE_DELTA", "RUN_FINISHED",
    ]
    assert first[-1]["outcome"]["interrupts"][0]["id"] == f"parley-run-{RUN}-step-2"
    assert first[-3] == {"type": "STEP_FINISHED", "stepName": "Step 2: Waiting for your approval"}


def test_the_resumed_segment_starts_after_the_approval_with_the_progress_so_far():
    second = read(Segment(RUN, after_step=2), log())
    assert second[0]["type"] == "RUN_STARTED" and second[1]["snapshot"]["status"] == "awaiting_approval"
    assert second[1]["snapshot"]["tokens"] == 10 and second[1]["snapshot"]["stepsDone"] == 1
    assert [e["toolCallId"] for e in second if e["type"] == "TOOL_CALL_START"] == [f"parley-run-{RUN}-c1"]
    assert second[-1] == {"type": "RUN_FINISHED", "threadId": "thread", "runId": "run-a", "result": "Sent.", "outcome": {"type": "success"}}
    assert read(Segment(RUN, after_step=2), log()) == second


def test_a_log_that_is_gone_still_ends_the_run():
    final = log()[-1]
    out = read(Segment(RUN, after_step=2), [final])
    assert [e["type"] for e in out] == ["RUN_STARTED", "STATE_SNAPSHOT", "RUN_FINISHED"]
    assert out[1]["snapshot"]["status"] == "succeeded" and out[1]["snapshot"]["tokens"] == 10


def test_a_failed_run_ends_with_run_error_and_closes_what_was_open():
    failed = events.run_event("run_finished", RUN, 4, status="failed", result="", error_code="run_limit",
                              error_text="The run reached its limit of 3 steps.", tokens=1, cost_usd="0")
    out = read(Segment(RUN), [*log()[:3], failed])
    assert [e["type"] for e in out][-4:] == ["TEXT_MESSAGE_END", "STEP_FINISHED", "STATE_DELTA", "RUN_ERROR"]
    assert out[-1] == {"type": "RUN_ERROR", "message": "The run reached its limit of 3 steps.", "code": "run_limit"}
