"""Celery on RabbitMQ: a worker killed by SIGKILL mid-task loses nothing (the broker gives its task
to the other worker at once, which finishes the run exactly once), and a run's queue goes when
unused. The broker is CELERY_BROKER_URL when it is amqp, else PARLEY_TEST_AMQP_URL; in CI
RabbitMQ must answer (a skip is a failure there)."""

import os
import time
import uuid

import pytest
from django.conf import settings
from django.contrib.auth.models import Permission
from kombu import Connection
from kombu.exceptions import OperationalError

from accounts.models import ApiToken
from agents.models import AgentRun, AgentStep
from billing.models import UsageRecord
from tests.test_agent_runs_live import api, assert_in_order_once, sse_run_events, start

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"


def amqp_url() -> str:
    if settings.CELERY_BROKER_URL.startswith("amqp"):
        return settings.CELERY_BROKER_URL
    return os.environ.get("PARLEY_TEST_AMQP_URL", DEFAULT_AMQP_URL)


@pytest.fixture
def broker() -> str:
    url = amqp_url()
    try:
        with Connection(url, connect_timeout=5) as connection:
            connection.ensure_connection(max_retries=1)
    except (OSError, OperationalError) as error:
        pytest.skip(f"RabbitMQ is not reachable at {url} ({error}); start it with `rabbitmq-server -detached`")
    return url


def queue_exists(url: str, name: str) -> bool:
    with Connection(url, connect_timeout=5) as connection:
        channel = connection.channel()
        try:
            channel.queue_declare(name, passive=True)
        except connection.channel_errors:
            return False
        finally:
            try:
                channel.close()
            except connection.connection_errors + connection.channel_errors:
                pass  # a refused passive declare has closed the channel already
        return True


def test_a_worker_killed_mid_task_leaves_it_to_the_other_which_finishes_it_once(live_factory, alice, tmp_path, broker):
    """No reaper runs here: only the broker's redelivery can bring the run back."""
    alice.user_permissions.add(Permission.objects.get(codename="use_email_tool"))
    mailbox = tmp_path / "mail"
    app = live_factory(
        CELERY_BROKER_URL=broker, PARLEY_CELERY_QUEUE=f"rabbit-kill-{uuid.uuid4().hex[:8]}",
        EMAIL_BACKEND="django.core.mail.backends.filebased.EmailBackend", EMAIL_FILE_PATH=str(mailbox),
        PARLEY_RUN_LEASE_SECONDS="2", PARLEY_REAP_SECONDS="3600",
    )
    app.start_daphne()
    workers = [app.start_worker("first"), app.start_worker("second")]
    token = ApiToken.issue(alice, "rabbit")[1]
    run = start(app.url, token, goal="Report on parley, compute 8 * 8, mail it to pat@example.com /slow 150")

    before = sse_run_events(app.url, token, run["id"], until="approval_requested")
    approval = AgentStep.objects.get(run_id=run["id"], kind="approval")
    decided = api(app.url, token, "POST", f"/api/runs/{run['id']}/approvals/{approval.pk}", json={"decision": "approve"})
    assert decided.status_code == 200, decided.text
    during = sse_run_events(app.url, token, run["id"], after=before[-1]["cursor"], until="step_delta")
    assert any(e["type"] == "tool_result" and e["ok"] for e in during)
    # The approval sent the run to a worker again: kill that one (the whole worker, mid-step, its
    # task unacknowledged); the other waits on the same queue.
    task_id = AgentRun.objects.get(pk=run["id"]).task_id
    doomed, other = sorted(workers, key=lambda worker: task_id not in worker.log_path.read_text())
    assert task_id in doomed.log_path.read_text() and task_id not in other.log_path.read_text()
    doomed.kill()
    assert len(list(mailbox.iterdir())) == 1

    after = sse_run_events(app.url, token, run["id"], after=during[-1]["cursor"])
    received = before + during + after
    assert_in_order_once(received)
    assert received[-1]["type"] == "run_finished" and received[-1]["status"] == "succeeded", received[-1]
    assert len(list(mailbox.iterdir())) == 1  # the e-mail went once

    stored = AgentRun.objects.get(pk=run["id"])
    assert stored.attempts == 0  # delivered again by RabbitMQ, not resumed by a reaper
    steps = list(stored.steps.order_by("index"))
    indices = [s.index for s in steps]
    assert indices == list(range(indices[0], indices[0] + len(steps)))  # none done twice, none skipped
    assert [(s.kind, s.result) for s in steps if s.status == "failed"] == [("model", {"code": "interrupted"})]
    assert [s.tool for s in steps if s.kind == "tool"].count("send_email") == 1
    assert UsageRecord.objects.filter(kind="agent").count() == sum(1 for s in steps if s.kind == "model")
    assert task_id in other.log_path.read_text()  # the same task, finished by the other worker


def test_a_run_s_queue_is_deleted_once_unused(live_factory, broker):
    name = f"rabbit-expiry-{uuid.uuid4().hex[:8]}"
    app = live_factory(CELERY_BROKER_URL=broker, PARLEY_CELERY_QUEUE=name, PARLEY_CELERY_QUEUE_EXPIRES_SECONDS="1")
    app.start_worker()
    assert queue_exists(broker, name)
    app.stop()
    # Looking is using: each look (a passive declare) starts the queue's second again, so look
    # less often than that.
    deadline = time.monotonic() + 20
    while True:
        time.sleep(3)
        if not queue_exists(broker, name):
            break
        assert time.monotonic() < deadline, f"the queue {name} outlived its last consumer"
