"""Celery tasks of agent runs: thin doors that take a run id and call the runner or the reaper."""

from celery import shared_task

from agents import reaper, runner


@shared_task(bind=True, ignore_result=True, acks_late=True, reject_on_worker_lost=True)
def execute_run(self, run_id: int) -> None:  # type: ignore[no-untyped-def]
    """Idempotent: a run that ended, waits for a person, or is being executed elsewhere is left alone."""
    if not isinstance(run_id, int) or isinstance(run_id, bool) or run_id <= 0:
        raise ValueError(f"execute_run needs a run id, got {run_id!r}")
    runner.execute(run_id, self.request.id or "")


@shared_task(ignore_result=True)
def reap_runs() -> int:
    return reaper.reap_runs()
