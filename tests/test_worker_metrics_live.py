"""A Celery worker in a container of its own serves its processes' metrics on
PARLEY_WORKER_METRICS_PORT: the tasks its pool children ran, without the site's scrape-time gauges."""

import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.live import free_port

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

REAP = "chat.tasks.reap_interrupted"


def scrape(port: int) -> dict[str, list]:
    body = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {family.name: family.samples for family in text_string_to_metric_families(body)}


def reaps_done(families: dict[str, list]) -> float:
    return sum(
        sample.value
        for sample in families.get("parley_celery_tasks", [])
        if sample.name == "parley_celery_tasks_total" and sample.labels == {"task": REAP, "outcome": "success"}
    )


def test_the_worker_serves_the_tasks_its_pool_ran_and_no_site_gauges(live_factory):
    port = free_port()
    app = live_factory(PARLEY_WORKER_METRICS_PORT=str(port), PARLEY_WORKER_METRICS_ADDRESS="127.0.0.1")
    app.start_worker()  # with beat: the reaper runs every few seconds, in the pool's child process
    deadline = time.monotonic() + 40
    families: dict[str, list] = {}
    while time.monotonic() < deadline:
        families = scrape(port)
        if reaps_done(families) >= 2:
            break
        time.sleep(0.5)
    assert reaps_done(families) >= 2, sorted(families)
    durations = [s for s in families["parley_celery_task_duration_seconds"] if s.name.endswith("_count") and s.labels["task"] == REAP]
    assert durations and durations[0].value >= 2
    # Breakers and runs are the site's: the web processes serve them, once.
    assert "parley_breaker_state" not in families
    assert "parley_agent_runs" not in families

