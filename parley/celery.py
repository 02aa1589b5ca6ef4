import logging
import os
from typing import Any

from celery import Celery
from celery.app.amqp import AMQP, Queues
from celery.signals import celeryd_init, task_postrun, task_prerun, worker_init, worker_process_shutdown, worker_ready
from kombu import Queue

from observability import tracing

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "parley.settings")


def queue_arguments(broker_url: str, expires_seconds: int) -> dict[str, int]:
    """RabbitMQ's x-expires for a queue when an expiry is set (PARLEY_CELERY_QUEUE_EXPIRES_SECONDS);
    nothing on Redis, where an empty queue is no key at all."""
    if not expires_seconds or not broker_url.startswith("amqp"):
        return {}
    return {"x-expires": expires_seconds * 1000}


class ExpiringQueues(Queues):
    """Every queue this app declares, the default one and any named by a sender, carries the same
    arguments, read when it is first used: RabbitMQ refuses a second declaration of a queue with
    other arguments, so senders and workers must agree, and tests pick queue names late."""

    def __setitem__(self, name: str, queue: Queue) -> None:
        from django.conf import settings

        extra = queue_arguments(settings.CELERY_BROKER_URL, settings.PARLEY_CELERY_QUEUE_EXPIRES_SECONDS)
        if extra:
            queue.queue_arguments = {**(queue.queue_arguments or {}), **extra}
        super().__setitem__(name, queue)


class ParleyAMQP(AMQP):
    queues_cls = ExpiringQueues


app = Celery("parley", amqp=ParleyAMQP)
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# Each pool process sets up its own traces; a task's run continues the trace and request id its
# publish sent (observability/tracing.py).
tracing.install_celery_hooks()


@worker_ready.connect
def _refresh_models_at_start(sender: object, **kwargs: object) -> None:
    """A fresh `bin/parley run` lists the endpoints' models within seconds, not at beat's first tick."""
    app.send_task("chat.tasks.refresh_models")


@worker_init.connect
def _serve_metrics(sender: object, **kwargs: object) -> None:
    """PARLEY_WORKER_METRICS_PORT: the worker's own metrics door (a container has no web process
    beside it to serve them); its pool children write to the same directory."""
    from django.conf import settings

    if settings.PARLEY_WORKER_METRICS_PORT:
        from observability import metrics

        metrics.serve_worker_metrics(settings.PARLEY_WORKER_METRICS_ADDRESS, settings.PARLEY_WORKER_METRICS_PORT)


@task_prerun.connect
def _task_started(task_id: str, **kwargs: object) -> None:
    from observability import metrics

    metrics.task_started(task_id)


@task_postrun.connect
def _task_ended(task_id: str, task: object, state: str | None = None, **kwargs: object) -> None:
    """Every outcome (success, failure, retry, ...) ends in task_postrun, so one handler counts them
    all and none twice; task_failure and task_retry would each count a subset again."""
    from observability import metrics

    metrics.task_ended(task_id, getattr(task, "name", "unknown"), state or "unknown")


@worker_process_shutdown.connect
def _pool_process_ended(pid: int | None = None, **kwargs: object) -> None:
    """A prefork child leaves without running atexit: its live gauges are let go here."""
    from observability import metrics

    metrics.process_ended(pid)


class QuietReaper(logging.Filter):
    """The reapers (of replies and of agent runs) run every few seconds: three INFO lines a run
    (sent, received, succeeded) would bury the rest of the worker's log. They log a WARNING
    themselves whenever they end a reply or resume a run."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return record.levelno > logging.INFO or ("reap_interrupted" not in message and "reap_runs" not in message)


for name in ("celery.beat", "celery.worker.strategy", "celery.app.trace"):
    logging.getLogger(name).addFilter(QuietReaper())


@celeryd_init.connect
def _no_banner_among_json_lines(sender: object, instance: Any, **kwargs: object) -> None:
    """With JSON logs every line is a JSON object: the start-up banner (`--quiet`) is left out."""
    from django.conf import settings

    if settings.PARLEY_LOG_FORMAT == "json":
        instance.quiet = True


if os.environ.get("PARLEY_LOCAL_RUN") or os.environ.get("PARLEY_LOG_FORMAT", "").lower() == "json":
    # `bin/parley run` on a laptop or in a container often runs as root; the worker accepts only
    # JSON, so Celery's warning (meant for pickle) is noise that pushes the banner out of view,
    # and, printed before logging is set up, the one line of a JSON log that is not JSON.
    import warnings

    from celery.exceptions import SecurityWarning

    warnings.filterwarnings("ignore", category=SecurityWarning)
