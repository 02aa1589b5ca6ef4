"""Celery tasks of agent runs: thin doors that take a run id and call the runner or the reaper."""

from celery import shared_task
from django.conf import settings

from agents import reaper, runner


@shared_task(bind=True, ignore_result=True, acks_late=True, reject_on_worker_lost=True)
def execute_run(self, run_id: int) -> None:  # type: ignore[no-untyped-def]
    """Idempotent: a run that ended or waits for a person is left alone; one under another worker's
    lease is asked about again once that lease could have lapsed, until it ends or is taken up."""
    if not isinstance(run_id, int) or isinstance(run_id, bool) or run_id <= 0:
        raise ValueError(f"execute_run needs a run id, got {run_id!r}")
    if not runner.execute(run_id, self.request.id or ""):
        raise self.retry(countdown=settings.PARLEY_RUN_LEASE_SECONDS, max_retries=None)


@shared_task(ignore_result=True)
def reap_runs() -> int:
    return reaper.reap_runs()
