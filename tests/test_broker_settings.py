"""The Celery broker's settings: Redis or RabbitMQ, each with its own options, and a clear refusal of
anything else or of a RabbitMQ that does not answer."""

import json
import os
import subprocess
import sys

from kombu import Exchange, Queue

from parley.celery import app as celery_app
from parley.celery import queue_arguments
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
    assert queue_arguments("redis://127.0.0.1:6379/0", 300) == {}
    assert queue_arguments("amqp://guest:guest@127.0.0.1:5672//", 0) == {}
    assert queue_arguments("amqp://guest:guest@127.0.0.1:5672//", 300) == {"x-expires": 300_000}


def test_every_queue_the_app_declares_carries_the_expiry(settings):
    settings.CELERY_BROKER_URL = "amqp://guest:guest@127.0.0.1:5672//"
    settings.PARLEY_CELERY_QUEUE_EXPIRES_SECONDS = 7
    queues = celery_app.amqp.Queues([Queue("named", Exchange("named"), "named")])
    assert queues["named"].queue_arguments == {"x-expires": 7000}
    assert queues["picked-late"].queue_arguments == {"x-expires": 7000}  # a queue a sender names
    assert queues["picked-late"].durable and not queues["picked-late"].auto_delete
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:6379/0"
    assert not celery_app.amqp.Queues([])["on-redis"].queue_arguments


def test_the_test_command_refuses_a_rabbitmq_that_does_not_answer():
    env = {**os.environ, "CELERY_BROKER_URL": "amqp://guest:guest@127.0.0.1:1//"}
    env.pop("CI", None)  # not the CI checks for a browser
    done = subprocess.run([sys.executable, "-m", "parley.testrunner", "--co", "-q", "tests/test_broker_settings.py"],
                          env=env, capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 1
    assert "CELERY_BROKER_URL=amqp://guest:***@127.0.0.1:1// is not reachable" in done.stderr
    assert "rabbitmq-server -detached" in done.stderr
