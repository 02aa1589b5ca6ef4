"""Celery tasks of the support app: thin doors that call an action."""

from celery import shared_task

from support import retention


@shared_task(ignore_result=True)
def purge_expired() -> int:
    """On beat's schedule (PARLEY_RETENTION_PURGE_SECONDS). Idempotent: a second run, or a
    redelivered one, finds nothing left past its period."""
    return retention.purge_expired().conversations
