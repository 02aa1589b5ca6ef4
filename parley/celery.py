import logging
import os

from celery import Celery
from celery.app.amqp import AMQP, Queues
from celery.signals import worker_ready
from kombu import Queue

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
