import logging
import os

from celery import Celery
from celery.signals import worker_ready
from kombu import Exchange, Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "parley.settings")

app = Celery("parley")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def task_queues(name: str, broker_url: str, expires_seconds: int) -> list[Queue] | None:
    """The one task queue, declared with RabbitMQ's x-expires when an expiry is set; None leaves
    Celery to declare it (as it does on Redis). Senders and workers must declare it alike, or
    RabbitMQ refuses the second declaration: both build it here from the same settings."""
    if not expires_seconds or not broker_url.startswith("amqp"):
        return None
    return [Queue(name, Exchange(name), routing_key=name, queue_arguments={"x-expires": expires_seconds * 1000})]


@app.on_after_configure.connect
def _declare_queue(sender: Celery, **kwargs: object) -> None:
    # Read when the configuration is first used, not at import: tests pick their queue name after
    # Django's settings are loaded (tests/conftest.py).
    from django.conf import settings

    queues = task_queues(settings.CELERY_TASK_DEFAULT_QUEUE, settings.CELERY_BROKER_URL, settings.PARLEY_CELERY_QUEUE_EXPIRES_SECONDS)
    if queues:
        sender.conf.task_queues = queues


@worker_ready.connect
def _refresh_models_at_start(sender: object, **kwargs: object) -> None:
    """A fresh `bin/parley run` lists the endpoints' models within seconds, not at beat's first tick."""
    app.send_task("chat.tasks.refresh_models")


class QuietReaper(logging.Filter):
    """The reapers (of replies and of agent runs) run every few seconds: three INFO lines a run
    (sent, received, succeeded) would bury the rest of the worker's log. They log a WARNING
    themselves whenever they end a reply or resume a run."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return record.levelno > logging.INFO or ("reap_interrupted" not in message and "reap_runs" not in message)


for name in ("celery.beat", "celery.worker.strategy", "celery.app.trace"):
    logging.getLogger(name).addFilter(QuietReaper())

if os.environ.get("PARLEY_LOCAL_RUN"):
    # `bin/parley run` on a laptop or in a container often runs as root; the worker accepts only
    # JSON, so Celery's warning (meant for pickle) is noise that pushes the banner out of view.
    import warnings

    from celery.exceptions import SecurityWarning

    warnings.filterwarnings("ignore", category=SecurityWarning)
