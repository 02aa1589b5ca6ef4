"""Celery tasks: thin wrappers that load by id and call an action."""

from celery import shared_task

from chat import alerts, reaper, titles


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
