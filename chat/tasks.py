"""Celery tasks: thin wrappers that load by id and call an action."""

from celery import shared_task

from chat import reaper, titles


@shared_task(ignore_result=True)
def reap_interrupted() -> int:
    return len(reaper.reap_interrupted())


@shared_task(ignore_result=True, autoretry_for=(ConnectionError,), max_retries=3, retry_backoff=True)
def generate_title(conversation_id: int) -> None:
    if not isinstance(conversation_id, int) or isinstance(conversation_id, bool) or conversation_id <= 0:
        raise ValueError(f"generate_title needs a conversation id, got {conversation_id!r}")
    titles.generate_title(conversation_id)
