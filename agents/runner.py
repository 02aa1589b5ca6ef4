"""Executing a run, step by step, in a Celery worker.

Each step is a row committed before it starts and again when it ends, and the next step is decided
from the committed rows alone (agents/transcript.py). So a run taken up by another worker (its
first worker was lost, or a person approved a step) continues after its last finished step and
never repeats one. A step the lost worker left half done is settled first: a model step is charged
for its reservation and asked again; a tool step without side effects runs again; one with side
effects is never repeated, since it may have taken effect, and the model reads why.

Every model step goes through billing/calls.py like a chat reply (admitted against the owner's
plan and budgets, recorded in the ledger, settled). Every change is appended to the run's event
log (agents/runlog.py) for the page to follow.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis
from django.db import connection, transaction
from django.utils import timezone

from accounts.models import SiteSettings
from accounts.plans import limits_for
from agents import limits as run_limits
from agents import transcript
from agents.lease import Lease
from agents.models import AgentRun, AgentStep
from agents.registry import REGISTRY, offered_to, prepare
from agents.runlog import RunLog
from agents.schema import InvalidArguments
from agents.tools import Tool, ToolContext, ToolRefused
from billing import calls, ledger, quotas
from billing.models import UsageRecord
from chat import branches, presets
from chat.actions import ActionError
from chat.models import ChatModel
from observability import context as observed
from observability import logs, tracing
from parley.redis_clients import sync_client
from providers import new_provider
from providers.base import Provider, StreamError, TextDelta, ToolCall, Usage
from resilience import chains
from resilience.attempts import Run, Target
from streaming.keys import run_cancel_key

logger = logging.getLogger(__name__)

INSTRUCTIONS = (
    "You are working on a task for the user, step by step, with the tools offered. Call a tool when "
    "it helps; read its result; when a tool fails, read the error and try another way. When the task "
    "is done, answer with the result in Markdown, without calling a tool."
)
DELTA_SECONDS = 0.1  # text of a model step is appended at most this often
CANCEL_CHECK_SECONDS = 0.2
MAX_MODEL_FAILURES = 3  # retryable provider errors in a row before the run fails
CONTEXT_CHARS = 4000  # the conversation's latest words the model is told about


class Stop(Exception):
    """The run must stop here: cancelled, over a limit, refused, or its lease lost."""

    def __init__(self, status: str, code: str = "", text: str = "") -> None:
        super().__init__(text or status)
        self.status, self.code, self.text = status, code, text


def execute(run_id: int, task_id: str = "") -> bool:
    """Take the run up if no other worker has it, and work on it until it ends or waits. False when
    another worker's lease is on a run still running: that worker may be at work, or lost (its
    child killed, and this is its task delivered again); the caller asks again once the lease could
    have lapsed, so a lost worker's run goes on even where no reaper runs."""
    lease = Lease(run_id)
    if not lease.acquire():
        logger.info("Run %s is held by another worker's lease", run_id)
        return not AgentRun.objects.filter(pk=run_id, status=AgentRun.Status.RUNNING).exists()
    try:
        run = AgentRun.objects.select_related("owner", "conversation").filter(pk=run_id).first()
        if run is None or run.status not in (AgentRun.Status.QUEUED, AgentRun.Status.RUNNING):
            return  # finished, cancelled, or waiting for a person: a stale delivery
        Runner(run, lease, task_id).work()
    finally:
        lease.release()
    return True


@dataclass(slots=True)
class _Streamed:
    """A model step's answer as it arrives; `pending` is text not yet in the log."""

    text: str = ""
    pending: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    usage: Usage | None = None
    error: StreamError | None = None
    stopped: str = ""


async def _read(attempts: Run, got: _Streamed) -> None:
    async for event in attempts.events():
        if isinstance(event, TextDelta):
            got.text += event.text
            got.pending += event.text
        elif isinstance(event, ToolCall):
            got.tool_calls.append(event)
        elif isinstance(event, Usage):
            got.usage = event
        elif isinstance(event, StreamError):
            got.error = event


@dataclass(frozen=True, slots=True)
class _ModelAnswer:
    text: str
    tool_calls: list[dict[str, str]]


class Runner:
    def __init__(self, run: AgentRun, lease: Lease, task_id: str) -> None:
        self.run = run
        self.lease = lease
        self.task_id = task_id
        self.redis = sync_client()
        self.log = RunLog(run)
        self.limits = run_limits.RunLimits.from_dict(run.limits)
        self._cancel_checked = 0.0
        self._cancelled = False

    # The loop ------------------------------------------------------------------------------------

    def work(self) -> None:
        observed.set_user(self.run.owner_id)
        attributes = {"parley.run_id": self.run.pk, "parley.conversation_id": self.run.conversation_id,
                      "parley.resume": self.run.attempts}
        with tracing.span("parley.agent_run", attributes) as span:
            self._work()
            if span.is_recording():
                span.set_attribute("parley.run.status", str(self.run.status))

    def _work(self) -> None:
        if not self._mark_running():
            return
        logger.info("Run %s working (resume %d); goal %s", self.run.pk, self.run.attempts, logs.text(self.run.goal))
        try:
            steps = list(self.run.steps.order_by("index"))
            self._settle_interrupted(steps)
            failures = 0
            while True:
                self._check_stop(steps)
                pending = transcript.pending_calls(steps)
                if pending:
                    if not self._work_on_call(steps, pending[0]):
                        return  # waiting for a person's decision
                    continue
                answer = self._model_step(steps)
                if answer is None:
                    failures += 1
                    if failures >= MAX_MODEL_FAILURES:
                        last = steps[-1]
                        raise Stop(AgentRun.Status.FAILED, last.result.get("code", "provider_unavailable") if last.result else
                                   "provider_unavailable", last.error)
                    self._pause(2.0 ** failures)
                    continue
                failures = 0
                if not answer.tool_calls:
                    self._finish(AgentRun.Status.SUCCEEDED, result=answer.text)
                    return
        except Stop as stop:
            if stop.status == "lost":
                logger.warning("Run %s: lease lost, leaving it to the worker that has it", self.run.pk)
                return
            self._finish(stop.status, code=stop.code, text=stop.text)
        except Exception:  # the worker survives whatever one run does
            if self.lease.lost.is_set():
                return  # the worker that resumed the run wrote this step too: it goes on there
            logger.exception("Run %s failed", self.run.pk)
            self._finish(AgentRun.Status.FAILED, code="server_error",
                         text="The run stopped on an unexpected error; the details are in the worker's log.")

    def _mark_running(self) -> bool:
        now = timezone.now()
        with transaction.atomic():
            run = AgentRun.objects.select_for_update().get(pk=self.run.pk)
            if run.status not in (AgentRun.Status.QUEUED, AgentRun.Status.RUNNING):
                return False
            first = run.started is None
            run.status, run.started, run.updated, run.task_id = AgentRun.Status.RUNNING, run.started or now, now, self.task_id
            run.current_step = run.current_step or "Starting"
            run.event_seq = self.log.next_seqs(1 if first else 0)
            run.save(update_fields=["status", "started", "updated", "task_id", "current_step", "event_seq"])
        self.run = run
        if first:
            self.log.emit(("run_started", {"goal": run.goal, "model": run.model}))
            self.log.notify(run)
        return True

    def _check_stop(self, steps: list[AgentStep]) -> None:
        if self.lease.lost.is_set():
            raise Stop("lost")
        if self._cancel_requested(force=True):
            raise Stop(AgentRun.Status.CANCELLED, text="Cancelled.")
        counted = sum(1 for s in steps if s.kind != AgentStep.Kind.APPROVAL)
        over = run_limits.exceeded(self.limits, counted, self._working_seconds(steps), self.run.tokens, self.run.cost_usd)
        if over:
            raise Stop(AgentRun.Status.FAILED, "run_limit", over)

    def _cancel_requested(self, force: bool = False) -> bool:
        """Read the cancel flag, at most every CANCEL_CHECK_SECONDS unless forced."""
        now = time.monotonic()
        if not self._cancelled and (force or now - self._cancel_checked >= CANCEL_CHECK_SECONDS):
            self._cancel_checked = now
            try:
                self._cancelled = bool(self.redis.exists(run_cancel_key(self.run.pk)))
            except redis.RedisError:
                logger.warning("Run %s: could not read its cancel flag", self.run.pk)
        return self._cancelled

    def _working_seconds(self, steps: list[AgentStep]) -> float:
        waits = [(s.started, s.decided_at) for s in steps if s.kind == AgentStep.Kind.APPROVAL]
        return run_limits.working_seconds(self.run.started, timezone.now(), waits)

    def _pause(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self._cancel_requested() or self.lease.lost.is_set():
                return
            time.sleep(CANCEL_CHECK_SECONDS)

    # Steps ---------------------------------------------------------------------------------------

    def _start_step(self, steps: list[AgentStep], **fields: Any) -> AgentStep:
        """Commit a new step (or take up again a half-done one at the same place) and say so."""
        index = steps[-1].index + 1 if steps else 1
        is_tool = fields.get("kind") == AgentStep.Kind.TOOL
        with transaction.atomic():
            step = AgentStep.objects.create(run=self.run, index=index, **fields)
            self._save_run(current_step=step.title, event_seq=self.log.next_seqs(3 if is_tool else 2))
        steps.append(step)
        started = [("step_started", {"step": step.index, "kind": step.kind, "title": step.title})]
        if is_tool:
            started.append(("tool_call", {"step": step.index, "call_id": step.call_id, "tool": step.tool, "arguments": step.arguments}))
        self.log.emit(*started, ("progress", {"percent": self.run.progress, "current": step.title}))
        return step

    def _end_step(self, steps: list[AgentStep], step: AgentStep, status: str, outcome: list[tuple[str, dict[str, Any]]],
                  charge: Callable[[], calls.Settled | None] | None = None, **fields: Any) -> None:
        """Commit a step's end, with its ledger row (`charge`), the run's totals and progress; then
        append what happened."""
        for name, value in fields.items():
            setattr(step, name, value)
        step.status, step.finished = status, timezone.now()
        done = sum(1 for s in steps if s.finished or s is step)
        progress = max(self.run.progress, min(95, 100 * done // (done + 2)))
        finished = "succeeded" if status == AgentStep.Status.SUCCEEDED else "failed"
        with transaction.atomic():
            settled = charge() if charge is not None else None
            if settled is not None:
                step.tokens, step.cost_usd = settled.entry.total_tokens, settled.entry.cost_usd
            step.save()
            self._save_run(
                progress=progress, tokens=self.run.tokens + step.tokens, cost_usd=self.run.cost_usd + step.cost_usd,
                event_seq=self.log.next_seqs(len(outcome) + 2),
            )
        self.log.emit(
            *outcome,
            ("step_finished", {"step": step.index, "status": finished, "tokens": step.tokens, "cost_usd": str(step.cost_usd)}),
            ("progress", {"percent": progress, "current": self.run.current_step}),
        )

    def _save_run(self, **fields: Any) -> None:
        fields["updated"] = timezone.now()
        for name, value in fields.items():
            setattr(self.run, name, value)
        AgentRun.objects.filter(pk=self.run.pk).update(**fields)

    # Model steps ---------------------------------------------------------------------------------

    def _model_step(self, steps: list[AgentStep]) -> _ModelAnswer | None:
        """Ask the model what to do next; None when the provider failed (the step says why)."""
        run = self.run
        model = ChatModel.objects.filter(name=run.model, enabled=True).first()
        if model is None or not model.is_offered:
            raise Stop(AgentRun.Status.FAILED, "unknown_model", f"The model {run.model!r} is no longer offered.")
        suspended, limits = limits_for(run.owner_id)
        if suspended:
            raise Stop(AgentRun.Status.FAILED, "suspended", "Your account is suspended: the run cannot go on.")
        tools = offered_to(run.owner)
        messages = transcript.messages(run.goal, steps)
        system = self._system_prompt()
        try:
            admitted = calls.admit(
                run.owner_id, limits, model, system, [("user", _flat(messages, tools))], kind=UsageRecord.Kind.AGENT,
                max_output=max(1, self.limits.max_tokens - run.tokens), background=True, conversation_id=run.conversation_id,
            )
        except ActionError as refused:
            raise Stop(AgentRun.Status.FAILED, refused.code, refused.event()["text"]) from refused
        step = self._start_step(
            steps, kind=AgentStep.Kind.MODEL, title="Thinking" if steps else "Planning",
            quota_claim=admitted.reservation.claim(admitted.call.prompt_estimate),
        )
        offered = tuple(tool.as_spec() for tool in tools)
        turns = [("user", _flat(messages, tools))]

        async def readmit(fallback: ChatModel, previous: Target) -> Target:
            """The step moved to the next model of the chain, admitted at its price (no ORM: Redis only)."""
            again = await asyncio.to_thread(
                calls.readmit, run.owner_id, limits, previous.reservation, fallback, system, turns,
                kind=UsageRecord.Kind.AGENT, conversation_id=run.conversation_id, message_id=None, background=True,
            )
            return Target.of(again, system, messages, offered)

        attempts = Run(Target.of(admitted, system, messages, offered), chains.chain_of(model), readmit)
        started = time.monotonic()
        reply = asyncio.run(self._stream(step, attempts, self._deadline(steps)))
        duration_ms = int((time.monotonic() - started) * 1000)
        error, usage = reply.error, reply.usage
        outcome = "failed" if error else ("stopped" if reply.stopped else "complete")

        def charge() -> calls.Settled | None:
            return calls.settle(
                attempts.target.call, attempts.target.reservation, outcome, usage.prompt_tokens if usage else None,
                usage.completion_tokens if usage else None, reply.text, duration_ms, str(error.code) if error else "",
                attempt=attempts.settled_attempt, failed_attempts=attempts.separate_attempts,
            )

        if reply.stopped:
            self._end_step(steps, step, AgentStep.Status.FAILED, [], charge, text=reply.text, error=reply.stopped,
                           quota_claim="")
        elif error is not None:
            self._end_step(steps, step, AgentStep.Status.FAILED, [], charge, text=reply.text, error=error.plain_words,
                           result={"code": str(error.code)}, quota_claim="")
        else:
            calls_made = _numbered(reply.tool_calls, step.index, steps)
            self._end_step(steps, step, AgentStep.Status.SUCCEEDED, [], charge, text=reply.text,
                           result={"tool_calls": calls_made} if calls_made else {}, quota_claim="")
        if reply.stopped:
            self._check_stop(steps)  # a cancel or a lost lease says so itself
            raise Stop(AgentRun.Status.FAILED, "run_limit", reply.stopped)
        if error is not None:
            if not error.retryable:
                raise Stop(AgentRun.Status.FAILED, str(error.code), error.plain_words)
            return None
        return _ModelAnswer(reply.text, step.result.get("tool_calls", []))

    async def _stream(self, step: AgentStep, attempts: Run, deadline: float) -> "_Streamed":
        """The model's answer, retried and failed over before its first token (resilience/attempts.py).
        Its text is appended to the log a few times a second, and a cancel, a lost lease or the run's
        time limit stops it within a fraction of a second (with `stopped` saying why), even while
        the provider is silent, thinking before its first token."""
        adapters: dict[str, Provider] = {}  # this loop's own: the step runs in an event loop of its own

        def provider_for(name: str) -> Provider:
            if name not in adapters:
                adapters[name] = new_provider(name)
            return adapters[name]

        attempts.provider_for = provider_for
        got = _Streamed()
        reading = asyncio.create_task(_read(attempts, got))
        try:
            while True:
                done, _ = await asyncio.wait({reading}, timeout=DELTA_SECONDS)
                self._append_text(step, got)
                if done:
                    reading.result()  # the adapter's own failures are StreamErrors; anything else is a bug
                    break
                got.stopped = self._why_stop_now(time.monotonic(), deadline)
                if got.stopped:
                    reading.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await reading
                    break
        finally:
            for adapter in adapters.values():
                await adapter.aclose()
        self._append_text(step, got)
        return got

    def _append_text(self, step: AgentStep, got: "_Streamed") -> None:
        if got.pending:
            self.log.emit(("step_delta", {"step": step.index, "text": got.pending}))
            got.pending = ""

    def _deadline(self, steps: list[AgentStep]) -> float:
        """When, on the monotonic clock, the run's working time runs out."""
        return time.monotonic() + max(0.0, self.limits.max_seconds - self._working_seconds(steps))

    def _why_stop_now(self, now: float, deadline: float) -> str:
        if self._cancel_requested():
            return "Cancelled."
        if self.lease.lost.is_set():
            return "The run was taken up by another worker."
        if now >= deadline:
            return f"The run reached its limit of {self.limits.max_seconds} seconds of work."
        return ""

    def _system_prompt(self) -> str:
        conversation = self.run.conversation
        parts = [presets.resolve_system(conversation).text, INSTRUCTIONS]  # a preset's current version
        recent = branches.newest_of_branch(conversation, 6)  # of the branch the page shows
        context = "\n\n".join(f"{message.role}: {message.content}" for message in recent)[-CONTEXT_CHARS:]
        if context:
            parts.append(f"The conversation the task was started from ends with:\n\n{context}")
        return "\n\n".join(part for part in parts if part)

    # Tool calls ----------------------------------------------------------------------------------

    def _work_on_call(self, steps: list[AgentStep], call: transcript.PendingCall) -> bool:
        """Run, refuse, or ask a person about one pending call. False when the run now waits."""
        tool = REGISTRY.get(call.name)
        approval = next((s for s in steps if s.kind == AgentStep.Kind.APPROVAL and s.call_id == call.call_id), None)
        if tool is not None and tool.risk == "high" and tool.allowed_for(self.run.owner):
            if approval is None:
                self._ask_approval(steps, tool, call)
                return False
            if approval.status == AgentStep.Status.AWAITING_APPROVAL:
                return False
        self._tool_step(steps, call)
        return True

    def _ask_approval(self, steps: list[AgentStep], tool: Tool, call: transcript.PendingCall) -> None:
        arguments = transcript.parsed_arguments(call.arguments)
        shown = arguments if isinstance(arguments, dict) else {"raw": call.arguments}
        minutes = SiteSettings.current().approval_expiry_minutes
        title = f"Waiting for your approval: {tool.title.lower()}"
        index = steps[-1].index + 1
        with transaction.atomic():
            step = AgentStep.objects.create(
                run=self.run, index=index, kind=AgentStep.Kind.APPROVAL, title=title, tool=tool.name, call_id=call.call_id,
                arguments=shown, status=AgentStep.Status.AWAITING_APPROVAL,
                expires=timezone.now() + timezone.timedelta(minutes=minutes),
            )
            self._save_run(status=AgentRun.Status.AWAITING_APPROVAL, current_step=title, event_seq=self.log.next_seqs(3))
        steps.append(step)
        self.log.emit(
            ("step_started", {"step": step.index, "kind": step.kind, "title": title}),
            ("approval_requested", {"step": step.index, "tool": tool.name, "arguments": shown, "reason": tool.description}),
            ("progress", {"percent": self.run.progress, "current": title}),
        )
        self.log.notify(self.run)

    def _tool_step(self, steps: list[AgentStep], call: transcript.PendingCall) -> None:
        arguments = transcript.parsed_arguments(call.arguments)
        tool = REGISTRY.get(call.name)
        shown = arguments if isinstance(arguments, dict) else {"raw": call.arguments}
        step = self._start_step(
            steps, kind=AgentStep.Kind.TOOL, title=tool.title if tool else f"Calling {call.name[:60]}", tool=call.name[:60],
            call_id=call.call_id, arguments=shown,
        )
        try:
            tool, checked = prepare(self.run.owner, call.name, arguments)
        except (ToolRefused, InvalidArguments) as refused:
            self._end_tool(steps, step, AgentStep.Status.REFUSED, error=str(refused))
            return
        if tool.side_effects:
            # Recorded, and committed, before the effect: a step found with it set and not finished
            # was under way when its worker was lost, and is never run again (see _settle_interrupted).
            step.idempotency_key = f"run-{self.run.pk}-step-{step.index}"
            AgentStep.objects.filter(pk=step.pk).update(idempotency_key=step.idempotency_key)
        context = ToolContext(
            user=self.run.owner, run_id=self.run.pk, step_id=step.pk, conversation_id=self.run.conversation_id,
            idempotency_key=step.idempotency_key or "", cancelled=self._cancel_requested,
        )
        try:
            result = self._call_with_timeout(tool, context, checked)
        except Stop:
            self._end_tool(steps, step, AgentStep.Status.FAILED, error="Cancelled while the tool ran.")
            raise
        except FutureTimeout:
            self._end_tool(steps, step, AgentStep.Status.FAILED, error=f"The tool took longer than {tool.timeout_seconds:g} seconds.")
            return
        except Exception as error:  # a tool's failure is the model's to read, not the worker's
            # The error may quote the arguments the model wrote.
            logger.info("Run %s: tool %s failed: %s", self.run.pk, tool.name, logs.text(str(error)))
            self._end_tool(steps, step, AgentStep.Status.FAILED, error=_plain(error))
            return
        self._end_tool(steps, step, AgentStep.Status.SUCCEEDED, result=result)

    def _end_tool(self, steps: list[AgentStep], step: AgentStep, status: str, result: Any = None, error: str = "") -> None:
        ok = status == AgentStep.Status.SUCCEEDED
        outcome = [("tool_result", {"step": step.index, "call_id": step.call_id, "ok": ok, "result": result if ok else None,
                                    "error": None if ok else error})]
        self._end_step(steps, step, status, outcome, result=result if ok else None, error=error)

    def _call_with_timeout(self, tool: Tool, context: ToolContext, arguments: dict[str, Any]) -> Any:
        """The tool's result, run on a thread of its own so that a cancel or its timeout is noticed
        while it works; a tool that overruns is abandoned (its thread ends on its own)."""
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"tool-{tool.name}")
        future = pool.submit(_in_own_connection, tool, context, arguments)
        pool.shutdown(wait=False)
        deadline = time.monotonic() + tool.timeout_seconds
        while True:
            try:
                return future.result(timeout=min(CANCEL_CHECK_SECONDS, max(0.0, deadline - time.monotonic())))
            except FutureTimeout:
                if self._cancel_requested() or self.lease.lost.is_set():
                    raise Stop(AgentRun.Status.CANCELLED, text="Cancelled.") from None
                if time.monotonic() >= deadline:
                    raise

    # Recovery ------------------------------------------------------------------------------------

    def _settle_interrupted(self, steps: list[AgentStep]) -> None:
        """Steps a lost worker left running: charge and retry a model step, retry a tool step
        without side effects, and close one with side effects without repeating it."""
        for step in [s for s in steps if s.status == AgentStep.Status.RUNNING]:
            if step.kind == AgentStep.Kind.MODEL:
                self._end_step(steps, step, AgentStep.Status.FAILED, [], self._lost_model_step_charge(step),
                               error="The worker was lost while the model answered.", result={"code": "interrupted"},
                               quota_claim="")
            elif step.idempotency_key:
                self._end_tool(steps, step, AgentStep.Status.FAILED, error=(
                    "The worker was lost while this tool ran. It is not run again, because it may have taken effect."
                ))
            else:
                steps.remove(step)
                step.delete()  # nothing happened that a second run of it would repeat

    def _lost_model_step_charge(self, step: AgentStep) -> Callable[[], calls.Settled | None] | None:
        """The charge of a model step whose worker was lost: its reservation, settled to its
        prompt and the text it had streamed (estimated), like a reply whose process died."""
        parsed = quotas.Reservation.from_claim(self.run.owner_id, step.quota_claim)
        if parsed is None:
            return None
        reservation, prompt_estimate = parsed
        model = ChatModel.objects.filter(name=self.run.model).first()
        pricing = ledger.Pricing.of(model.input_price_per_million, model.output_price_per_million) if model else ledger.Pricing(known=False)
        call = ledger.Call(
            user_id=self.run.owner_id, kind=UsageRecord.Kind.AGENT, provider=model.provider if model else "",
            model=self.run.model, pricing=pricing, prompt_estimate=prompt_estimate, conversation_id=self.run.conversation_id,
            reserved_output=reservation.tokens - prompt_estimate, endpoint=model.endpoint if model else "",
        )
        text = "".join(entry.text for entry in self.log.writer.read_run(self.run.pk)
                       if entry.kind == "step_delta" and orjson.loads(entry.payload).get("step") == step.index)
        return lambda: calls.settle(call, reservation, "interrupted", None, None, text, None)

    # The end -------------------------------------------------------------------------------------

    def _finish(self, status: str, result: str = "", code: str = "", text: str = "") -> None:
        finish(self.run, self.log, status, result=result, code=code, text=text)


def finish(run: AgentRun, log: RunLog, status: str, result: str = "", code: str = "", text: str = "") -> bool:
    """End a run that is still active: store its end, append `run_finished`, tell its tabs. False
    when it had already ended (a cancel and a finish that crossed)."""
    now = timezone.now()
    fields = {
        "status": status, "result": result, "error_code": code[:40], "error_text": text, "finished": now, "updated": now,
        "current_step": "", "event_seq": log.next_seqs(1),
    }
    if status == AgentRun.Status.SUCCEEDED:
        fields["progress"] = 100
    with transaction.atomic():
        if not AgentRun.objects.filter(pk=run.pk, status__in=AgentRun.ACTIVE).update(**fields):
            return False
        AgentStep.objects.filter(run=run, status=AgentStep.Status.AWAITING_APPROVAL).update(
            status=AgentStep.Status.REJECTED, note="The run ended first.", finished=now
        )
    run.refresh_from_db()
    log.emit(("run_finished", {
        "status": status, "result": result, "error_code": code or None, "error_text": text or None,
        "tokens": run.tokens, "cost_usd": str(run.cost_usd),
    }))
    log.notify(run)
    try:
        sync_client().delete(run_cancel_key(run.pk))
    except redis.RedisError:
        pass  # it expires by itself
    return True


def _in_own_connection(tool: Tool, context: ToolContext, arguments: dict[str, Any]) -> Any:
    try:
        return tool.run(context, arguments)
    finally:
        connection.close()  # this thread's own connection, opened by the tool's queries


def _numbered(tool_calls: list[ToolCall], index: int, steps: list[AgentStep]) -> list[dict[str, str]]:
    """The calls as stored, each with an id unique in the run: some local servers number every
    answer's calls from zero, and results are matched to calls by id."""
    seen = {call["id"] for s in steps if s.kind == AgentStep.Kind.MODEL for call in (s.result or {}).get("tool_calls", [])}
    out = []
    for n, call in enumerate(tool_calls, 1):
        call_id = call.call_id if call.call_id and call.call_id not in seen else f"call-{index}-{n}"
        seen.add(call_id)
        out.append({"id": call_id[:100], "name": call.name[:60], "arguments": call.arguments})
    return out


def _flat(messages: list[dict[str, Any]], tools: list[Tool]) -> str:
    """Everything the model is sent, as text, for the estimate of the prompt's tokens."""
    parts = [str(m.get("content", "")) + orjson.dumps(m.get("tool_calls", [])).decode() for m in messages]
    return "\n".join(parts) + orjson.dumps([tool.as_spec() for tool in tools]).decode()


def _plain(error: Exception) -> str:
    return str(error) or type(error).__name__

