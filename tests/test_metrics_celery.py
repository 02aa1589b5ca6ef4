"""Celery tasks counted by outcome through the signals parley/celery.py connects, in this process."""

from observability.metrics import REGISTRY
from parley.celery import app


@app.task(name="tests.metrics_fails")
def fails() -> None:
    raise ValueError("no")


@app.task(name="tests.metrics_succeeds")
def succeeds() -> int:
    return 1


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_failed_and_a_successful_task_are_counted_with_their_durations():
    failed = value("parley_celery_tasks_total", task="tests.metrics_fails", outcome="failure")
    done = value("parley_celery_tasks_total", task="tests.metrics_succeeds", outcome="success")
    timed = value("parley_celery_task_duration_seconds_count", task="tests.metrics_fails")
    assert fails.apply().failed()
    assert succeeds.apply().get() == 1
    assert value("parley_celery_tasks_total", task="tests.metrics_fails", outcome="failure") == failed + 1
    assert value("parley_celery_tasks_total", task="tests.metrics_succeeds", outcome="success") == done + 1
    assert value("parley_celery_task_duration_seconds_count", task="tests.metrics_fails") == timed + 1
