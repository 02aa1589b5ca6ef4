"""Celery tasks: thin wrappers that check the ids and call the action."""

from celery import shared_task

from shadows import runner


def _check_id(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"run_shadow needs a {name} id, got {value!r}")


@shared_task(ignore_result=True)
def run_shadow(message_id: int, config_id: int) -> None:
    """A shadow run of one complete reply; a redelivery finds its run and does nothing."""
    _check_id("message", message_id)
    _check_id("config", config_id)
    runner.run_shadow(message_id, config_id)
