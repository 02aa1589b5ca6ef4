"""Celery tasks: thin wrappers that load by id and call an action."""

from celery import shared_task

from billing import alerts
from chat import discovery, reaper, titles


@shared_task(ignore_result=True)
def reap_interrupted() -> int:
    return len(reaper.reap_interrupted())


@shared_task(ignore_result=True, autoretry_for=(ConnectionError,), max_retries=3, retry_backoff=True)
def generate_title(conversation_id: int) -> None:
    if not isinstance(conversation_id, int) or isinstance(conversation_id, bool) or conversation_id <= 0:
        raise ValueError(f"generate_title needs a conversation id, got {conversation_id!r}")
    titles.generate_title(conversation_id)


@shared_task(ignore_result=True, autoretry_for=(OSError,), max_retries=5, retry_backoff=True)
def check_cost_alert(scope: str, user_id: int | None, period: str, threshold: int) -> None:
    alerts.check(scope, user_id, period, threshold)


@shared_task(ignore_result=True, autoretry_for=(OSError,), max_retries=5, retry_backoff=True)
def alert_overspend(record_id: int) -> None:
    if not isinstance(record_id, int) or isinstance(record_id, bool) or record_id <= 0:
        raise ValueError(f"alert_overspend needs a usage record id, got {record_id!r}")
    alerts.send_overspend_alert(record_id)


@shared_task(ignore_result=True)
def refresh_models() -> int:
    """Every endpoint's model list, on a schedule and at a worker's start; returns how many answered."""
    return sum(outcome.ok for outcome in discovery.refresh())
