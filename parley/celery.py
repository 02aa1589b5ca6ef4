import logging
import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "parley.settings")

app = Celery("parley")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


class QuietReaper(logging.Filter):
    """The reaper runs every few seconds: three INFO lines a run (sent, received, succeeded) would
    bury the rest of the worker's log. It logs a WARNING itself whenever it ends a reply."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.INFO or "reap_interrupted" not in record.getMessage()


for name in ("celery.beat", "celery.worker.strategy", "celery.app.trace"):
    logging.getLogger(name).addFilter(QuietReaper())
