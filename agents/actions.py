"""Starting, reading, cancelling and deciding on agent runs: the actions behind every door.

Only a run's owner reaches it: every lookup is by the user and the id together, and a run of
someone else's is `not_found`, as if it did not exist. Changes are committed first; the Celery task
is sent and the tabs told once they are (the task reads the committed rows, never arguments).
"""

from typing import Any

import redis
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts.models import SiteSettings, User
from accounts.plans import limits_for
from agents.lease import is_held
from agents.limits import RunLimits
from agents.models import AgentRun, AgentStep, Artifact
from agents.runlog import RunLog
from agents.runner import finish
from billing import admission
from chat.actions import ActionError, get_conversation_for, parse_pk, resolve_model
from chat.enqueue import enqueue
from parley import deferred
from parley.celery import app
from parley.redis_clients import sync_client
from routing import router
from streaming.keys import run_cancel_key
from streaming.writer import SyncWriter

CANCEL_FLAG_SECONDS = 86_400


def enqueue_run(run_id: int) -> None:
    enqueue("agents.tasks.execute_run", run_id, why_it_matters="the run resumes when the reaper finds it")


def start_run(user: User, conversation_id: object, goal: object, model_name: object = None) -> AgentRun:
    """Store a queued run of `goal` in the user's conversation and send it to a worker on commit."""
    if not isinstance(goal, str) or not goal.strip():
        raise ActionError("invalid_input", "goal must be the task, in words.")
    if len(goal) > settings.PARLEY_RUN_GOAL_MAX_CHARS:
        raise ActionError("message_too_long", f"The goal is {len(goal):,} characters long; the limit is "
                                               f"{settings.PARLEY_RUN_GOAL_MAX_CHARS:,}.")
    if model_name is not None and not isinstance(model_name, str):
        raise ActionError("invalid_input", "model must be a model name.")
    with transaction.atomic():
        conversation = get_conversation_for(user, conversation_id)
        model = resolve_model(model_name) if model_name else conversation.model
        if not model.is_offered:
            raise ActionError("unknown_model", f"The model {model.name!r} is not offered. Pick another one.")
        suspended, limits = limits_for(user.pk)
        if suspended:
            raise ActionError("suspended")
        if model.is_auto:  # routed once, by its goal: every step of the run is then asked of that model
            model = router.choose(user.pk, limits, goal, [], [("user", goal)], "").model
        admission.check_model(limits, model)
        # Locks the user's row: two starts at once cannot both pass the count.
        User.objects.select_for_update().filter(pk=user.pk).first()
        if AgentRun.objects.filter(owner=user, status__in=AgentRun.ACTIVE).count() >= settings.PARLEY_MAX_ACTIVE_RUNS:
            raise ActionError("too_many_runs")
        run = AgentRun.objects.create(
            owner=user, conversation=conversation, goal=goal.strip(), model=model.name,
            limits=RunLimits.of(limits, SiteSettings.current()).as_dict(),
        )
        # Off the database thread every stream shares (parley/deferred.py): a broker publish and a
        # notice are Redis round trips that a burst of starts would queue everyone's reads behind.
        deferred.after_commit(lambda: SyncWriter().set_run_owner(run.pk, user.pk), "an agent run's owner key")
        deferred.after_commit(lambda: enqueue_run(run.pk), "an agent run's task")
        deferred.after_commit(lambda: RunLog(run).notify(run), "an agent run's notice")
    return run


def get_run_for(user: User, run_id: object) -> AgentRun:
    run = AgentRun.objects.filter(pk=parse_pk(run_id), owner=user).first()
    if run is None:
        raise ActionError("not_found")
    return run


def run_detail(run: AgentRun) -> dict[str, Any]:
    """The run with its steps and artifacts, as the page rebuilds its card from it."""
    data = run.as_dict()
    data["steps"] = [step.as_dict() for step in run.steps.select_related("decided_by").order_by("index")]
    data["artifacts"] = [artifact.as_dict() for artifact in run.artifacts.order_by("created", "id")]
    return data


def runs_of_conversation(user: User, conversation_id: object) -> list[dict[str, Any]]:
    conversation = get_conversation_for(user, conversation_id)
    return [run_detail(run) for run in conversation.agent_runs.order_by("created", "id")]


def cancel_run(user: User, run_id: object) -> AgentRun:
    """Cancel from any tab or process. A run no worker is executing (queued, or waiting for an
    approval) ends here at once; a running one is told through its flag and ends within a step's
    check (a fraction of a second), and its queued task, if any, is revoked."""
    run = get_run_for(user, run_id)
    if not run.is_active:
        raise ActionError("run_finished")
    with transaction.atomic():
        AgentRun.objects.filter(pk=run.pk).update(cancel_requested=True, updated=timezone.now())
    try:
        sync_client().set(run_cancel_key(run.pk), "1", ex=CANCEL_FLAG_SECONDS)
    except redis.RedisError as error:
        raise ActionError("busy", "The cancel could not be passed on; try again.", retry_after=2) from error
    with transaction.atomic():
        locked = AgentRun.objects.select_for_update().get(pk=run.pk)
        unattended = locked.status == AgentRun.Status.RUNNING and not is_held([run.pk])[run.pk]  # its worker was lost
        if locked.status in (AgentRun.Status.QUEUED, AgentRun.Status.AWAITING_APPROVAL) or unattended:
            finish(locked, RunLog(locked), AgentRun.Status.CANCELLED, text="Cancelled.")
    if run.task_id:
        try:
            app.control.revoke(run.task_id)
        except Exception:  # the flag does the work; revoking only spares a queued task its start
            pass
    run.refresh_from_db()
    return run


def decide(user: User, run_id: object, step_id: object, decision: object, note: object = "") -> AgentStep:
    """Approve or reject a step that waits for its owner; the run goes on in a worker."""
    if decision not in ("approve", "reject"):
        raise ActionError("invalid_input", 'decision must be "approve" or "reject".')
    if not isinstance(note, str) or len(note) > 2000:
        raise ActionError("invalid_input", "note must be text of at most 2,000 characters.")
    run = get_run_for(user, run_id)
    with transaction.atomic():
        run = AgentRun.objects.select_for_update().get(pk=run.pk)
        step = AgentStep.objects.filter(pk=parse_pk(step_id), run=run, kind=AgentStep.Kind.APPROVAL).first()
        if step is None:
            raise ActionError("not_found")
        if step.status != AgentStep.Status.AWAITING_APPROVAL or run.status != AgentRun.Status.AWAITING_APPROVAL:
            raise ActionError("not_awaiting_approval", f"That step was already decided ({step.status}).")
        if step.expires and step.expires <= timezone.now():
            raise ActionError("not_awaiting_approval", "That approval has expired; the run went on without it.")
        record_decision(run, step, decision, note, user)
    return step


def record_decision(run: AgentRun, step: AgentStep, decision: str, note: str, by: User | None) -> None:
    """Inside the caller's transaction, with the run's row locked: the decision, with who and when,
    and the run queued to go on (an expired approval is recorded the same way, by nobody)."""
    log = RunLog(run)
    now = timezone.now()
    step.status = AgentStep.Status.SUCCEEDED if decision == "approve" else AgentStep.Status.REJECTED
    step.decided_by, step.decided_at, step.finished, step.note = by, now, now, note
    step.save(update_fields=["status", "decided_by", "decided_at", "finished", "note"])
    run.status, run.updated, run.event_seq = AgentRun.Status.QUEUED, now, log.next_seqs(1)
    run.current_step = "Approved; going on" if decision == "approve" else "Rejected; going on without it"
    run.save(update_fields=["status", "updated", "event_seq", "current_step"])
    def go_on() -> None:  # in this order: the decision is in the log before a worker writes more
        log.emit(("approval_decided", {"step": step.index, "decision": decision, "note": note}))
        enqueue_run(run.pk)
        log.notify(run)

    deferred.after_commit(go_on, "an approval's decision")


def artifact_for(user: User, run_id: object, name: object) -> Artifact:
    run = get_run_for(user, run_id)
    artifact = run.artifacts.filter(name=name).first() if isinstance(name, str) else None
    if artifact is None:
        raise ActionError("not_found")
    return artifact
