"""The Celery broker's settings: Redis or RabbitMQ, each with its own options, and a clear refusal of
anything else or of a RabbitMQ that does not answer."""

import json
import os
import subprocess
import sys

from parley.celery import task_queues
from tests.live import ROOT

READ = (
    "import json, django; django.setup(); from django.conf import settings as s; "
    "print(json.dumps([s.CELERY_BROKER_URL, s.CELERY_BROKER_TRANSPORT_OPTIONS]))"
)


def settings_with(**env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in {"CELERY_BROKER_URL", "PARLEY_TASK_VISIBILITY_SECONDS"}}
    return subprocess.run([sys.executable, "-c", READ], env={**clean, "DJANGO_SETTINGS_MODULE": "parley.settings", **env},
                          capture_output=True, text=True, cwd=ROOT)


def test_redis_keeps_the_visibility_timeout_and_rabbitmq_confirms_publishes():
    redis_run = settings_with(PARLEY_TASK_VISIBILITY_SECONDS="120")
    assert redis_run.returncode == 0, redis_run.stderr
    url, options = json.loads(redis_run.stdout)
    assert url.startswith("redis://") and options == {"visibility_timeout": 120}

    amqp_run = settings_with(CELERY_BROKER_URL="amqp://guest:guest@127.0.0.1:5672//")
    assert amqp_run.returncode == 0, amqp_run.stderr
    assert json.loads(amqp_run.stdout) == ["amqp://guest:guest@127.0.0.1:5672//", {"confirm_publish": True}]


def test_another_broker_is_refused_naming_the_variable():
    refused = settings_with(CELERY_BROKER_URL="sqs://queue")
    assert refused.returncode != 0
    assert "CELERY_BROKER_URL='sqs://queue' must start with one of: redis://, rediss://, amqp://, amqps://" in refused.stderr


def test_the_queue_expires_only_on_rabbitmq_and_only_when_asked():
    assert task_queues("runs", "redis://127.0.0.1:6379/0", 300) is None
    assert task_queues("runs", "amqp://guest:guest@127.0.0.1:5672//", 0) is None
    [queue] = task_queues("runs", "amqp://guest:guest@127.0.0.1:5672//", 300)
    assert (queue.name, queue.exchange.name, queue.routing_key) == ("runs", "runs", "runs")
    assert queue.queue_arguments == {"x-expires": 300_000}
    assert queue.durable and not queue.auto_delete


def test_the_test_command_refuses_a_rabbitmq_that_does_not_answer():
    env = {**os.environ, "CELERY_BROKER_URL": "amqp://guest:guest@127.0.0.1:1//"}
    env.pop("CI", None)  # not the CI checks for a browser
    done = subprocess.run([sys.executable, "-m", "parley.testrunner", "--co", "-q", "tests/test_broker_settings.py"],
                          env=env, capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 1
    assert "CELERY_BROKER_URL=amqp://guest:***@127.0.0.1:1// is not reachable" in done.stderr
    assert "rabbitmq-server -detached" in done.stderr
