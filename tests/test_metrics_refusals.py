"""Refusals counted where they happen: a plan's limit in `admit`, a full process in its slots; and
requests by URL pattern, an unknown path as `unmatched`. Read from this process's own registry."""

import json

import pytest
from django.test import Client

from accounts.models import Plan
from observability.metrics import REGISTRY
from streaming.slots import Slots


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def send(client: Client):
    conversation = client.post("/api/conversations/", "{}", content_type="application/json").json()["id"]
    return client.post(f"/api/conversations/{conversation}/messages", json.dumps({"content": "hi /words 2"}), content_type="application/json")


@pytest.mark.django_db(transaction=True)
def test_a_send_past_a_limit_counts_a_rate_limit_refusal_by_limit(alice):
    Plan.objects.filter(name="Free").update(requests_per_minute=1)
    client = Client()
    client.force_login(alice)
    route = "api/conversations/<int:pk>/messages"
    before = value("parley_rate_limit_refusals_total", limit="requests_per_minute")
    refusals_before = value("parley_admission_refusals_total", reason="quota_exceeded")
    answered_before = value("parley_http_requests_total", route=route, method="POST", status="429")
    assert send(client).status_code == 201
    assert send(client).status_code == 429
    assert value("parley_rate_limit_refusals_total", limit="requests_per_minute") == before + 1
    assert value("parley_admission_refusals_total", reason="quota_exceeded") == refusals_before + 1
    assert value("parley_http_requests_total", route=route, method="POST", status="429") == answered_before + 1

def test_a_full_process_counts_an_admission_refusal():
    slots = Slots()
    before = value("parley_admission_refusals_total", reason="slots_full")
    assert slots.take(1) is True
    assert slots.take(1) is False
    assert value("parley_admission_refusals_total", reason="slots_full") == before + 1


@pytest.mark.django_db
def test_a_path_no_pattern_matches_is_counted_as_unmatched():
    before = value("parley_http_requests_total", route="unmatched", method="GET", status="404")
    assert Client().get("/no/such/page/12345").status_code == 404
    assert value("parley_http_requests_total", route="unmatched", method="GET", status="404") == before + 1
    other = value("parley_http_requests_total", route="unmatched", method="other", status="404")
    assert Client().generic("BREW", "/no/such/pot").status_code == 404
    assert value("parley_http_requests_total", route="unmatched", method="other", status="404") == other + 1
    assert value("parley_http_requests_total", route="unmatched", method="BREW", status="404") == 0


@pytest.mark.django_db
def test_without_a_metrics_directory_a_process_serves_its_own(monkeypatch):
    from prometheus_client.parser import text_string_to_metric_families

    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    Client().get("/healthz")
    response = Client().get("/metrics")  # the test client's address is 127.0.0.1
    assert response.status_code == 200
    samples = {s.name: s for f in text_string_to_metric_families(response.content.decode()) for s in f.samples}
    assert samples["parley_active_streams"].value == 0
    assert "parley_http_requests_total" in samples
