"""Asks the Celery worker for a task by its name.

The modules that ask for work (cost alerts, a reply's final write) are themselves imported by
chat.tasks, so importing the tasks back would tie them in an import cycle. Enqueueing never fails
its caller: what was asked for is a side effect of work that is already saved.
"""

import logging

from opentelemetry.trace import SpanKind

from observability import tracing
from parley.celery import app

logger = logging.getLogger(__name__)


def enqueue(task: str, *args: object, why_it_matters: str = "") -> bool:
    """Send `chat.tasks.<task>(*args)` (or a dotted task name of another app); False, logged with
    `why_it_matters`, when it could not be sent."""
    name = task if "." in task else f"chat.tasks.{task}"
    with tracing.span(f"send {name}", {"messaging.system": "celery", "messaging.operation.type": "send"}, SpanKind.PRODUCER) as span:
        try:
            # By name: the web process never loads the tasks module (a worker discovers it at start).
            # The headers carry the trace context and the request id into the task's run.
            app.send_task(name, args=args, headers=tracing.task_headers())
        except Exception as error:
            tracing.fail(span, type(error).__qualname__)
            logger.exception("Could not enqueue %s%r%s", task, args, f": {why_it_matters}" if why_it_matters else "")
            return False
    return True
