"""Runs nobody is working on: resumed when their worker was lost, ended when they cannot be, and
approvals that waited past their expiry counted as rejected. Runs every few seconds in Celery beat.

A run is taken by a worker under a lease (agents/lease.py). `running` without a lease means its
worker died (a SIGKILL, a lost host, a deploy that did not wait); `queued` for long without one
means its task was lost before any worker took it. Either is sent to a worker again, which goes on
after the run's last committed step, up to PARLEY_RUN_RESUMES times; after that it ends
`interrupted`, with the reason, and is never left `running`.
"""

import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from agents.actions import enqueue_run, record_decision
from agents.lease import is_held
from agents.models import AgentRun, AgentStep
from agents.runlog import RunLog
from agents.runner import finish

logger = logging.getLogger(__name__)

QUEUED_GRACE_SECONDS = 60  # a queued task normally starts within a second or two


def reap_runs() -> int:
    """Resume or end lost runs and expire approvals; returns how many runs it changed."""
    return _resume_lost() + _expire_approvals()


def _resume_lost() -> int:
    now = timezone.now()
    grace = now - timedelta(seconds=settings.PARLEY_RUN_LEASE_SECONDS)
    candidates = list(
        AgentRun.objects.filter(status=AgentRun.Status.RUNNING, updated__lt=grace).values_list("pk", flat=True)
    ) + list(
        AgentRun.objects.filter(
            status=AgentRun.Status.QUEUED, updated__lt=now - timedelta(seconds=QUEUED_GRACE_SECONDS)
        ).values_list("pk", flat=True)
    )
    held = is_held(candidates)
    changed = 0
    for run_id in (run_id for run_id in candidates if not held[run_id]):
        with transaction.atomic():
            run = AgentRun.objects.select_for_update().filter(pk=run_id, status__in=AgentRun.ACTIVE).first()
            if run is None or run.status == AgentRun.Status.AWAITING_APPROVAL:
                continue
            if run.attempts >= settings.PARLEY_RUN_RESUMES:
                ended = finish(run, RunLog(run), AgentRun.Status.INTERRUPTED, code="interrupted", text=(
                    f"The run's worker was lost {run.attempts + 1} times; it was not resumed again. Its steps so far are kept."
                ))
                changed += ended
                continue
            AgentRun.objects.filter(pk=run_id).update(attempts=run.attempts + 1, updated=timezone.now())
            transaction.on_commit(lambda run_id=run_id: enqueue_run(run_id))
            changed += 1
        logger.warning("Run %s had no worker; sent to another one (resume %d)", run_id, run.attempts + 1)
    return changed


def _expire_approvals() -> int:
    expired = list(
        AgentStep.objects.filter(status=AgentStep.Status.AWAITING_APPROVAL, expires__lte=timezone.now()).values_list("run_id", "pk")
    )
    changed = 0
    for run_id, step_id in expired:
        with transaction.atomic():
            run = AgentRun.objects.select_for_update().filter(pk=run_id, status=AgentRun.Status.AWAITING_APPROVAL).first()
            step = AgentStep.objects.filter(pk=step_id, status=AgentStep.Status.AWAITING_APPROVAL).first()
            if run is None or step is None:
                continue
            record_decision(run, step, "reject", "Nobody decided before the approval expired.", None)
            changed += 1
    return changed
