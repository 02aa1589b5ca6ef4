"""Who may read /metrics on a real daphne: loopback, listed networks, the bearer token; nobody else."""

import socket

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

TOKEN = "scrape-secret-4f1c"


def outside_address() -> str:
    """This host's address on its network: a connection to it does not come from loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))  # no packet is sent; this only picks the route's source address
        address = probe.getsockname()[0]
    assert not address.startswith("127."), "this test needs a network interface besides loopback"
    return address


def families(response: httpx.Response) -> set[str]:
    return {family.name for family in text_string_to_metric_families(response.text)}


def test_loopback_may_read_metrics(live_app):
    httpx.get(f"{live_app.url}/healthz")  # a counter shows once it has counted something
    response = httpx.get(f"{live_app.url}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert {"parley_http_requests", "parley_active_streams", "parley_breaker_state", "parley_agent_runs"} <= families(response)


def test_loopback_through_an_unknown_proxy_is_refused(live_app):
    # A reverse proxy on the same host connects from loopback for every outside client.
    for header in ({"X-Forwarded-For": "203.0.113.9"}, {"X-Forwarded-Proto": "https"}, {"Forwarded": "for=203.0.113.9"}):
        response = httpx.get(f"{live_app.url}/metrics", headers=header)
        assert response.status_code == 403, header
        assert response.json()["error"]["code"] == "forbidden"


def test_a_listed_network_does_not_count_through_an_unknown_proxy(live_factory):
    # daphne --proxy-headers (the image's web role) takes the address from the client's own header.
    app = live_factory(PARLEY_METRICS_ALLOW="10.0.0.0/8,127.0.0.0/8", PARLEY_METRICS_TOKEN=TOKEN)
    app.start_daphne()
    url = f"{app.url}/metrics"
    assert httpx.get(url).status_code == 200
    assert httpx.get(url, headers={"X-Forwarded-For": "10.1.1.1"}).status_code == 403
    assert httpx.get(url, headers={"X-Forwarded-For": "10.1.1.1", "Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_behind_a_tls_proxy_loopback_alone_does_not_count(live_factory):
    app = live_factory(BEHIND_TLS_PROXY="1")
    app.start_daphne()
    assert httpx.get(f"{app.url}/metrics").status_code == 403
    assert httpx.get(f"{app.url}/healthz").status_code == 200


def test_another_address_needs_an_allowed_network_or_the_token(live_factory):
    address = outside_address()
    app = live_factory(PARLEY_METRICS_TOKEN=TOKEN)
    server = app.start_daphne(host="0.0.0.0")
    url = f"http://{address}:{server.port}/metrics"
    assert httpx.get(url).status_code == 403
    assert httpx.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 403
    assert httpx.get(url, headers={"Authorization": f"Basic {TOKEN}"}).status_code == 403
    allowed = httpx.get(url, headers={"Authorization": f"Bearer {TOKEN}"})
    assert allowed.status_code == 200
    assert "parley_http_requests" in families(allowed)
    # Probes answer every address: they tell nothing an outsider could use.
    assert httpx.get(f"http://{address}:{server.port}/healthz").status_code == 200

    listed = live_factory(PARLEY_METRICS_ALLOW=f"198.51.100.0/24,{address}/32")
    listed_server = listed.start_daphne(host="0.0.0.0")
    assert httpx.get(f"http://{address}:{listed_server.port}/metrics").status_code == 200


def test_behind_trusted_proxies_the_forwarded_address_counts(live_factory):
    app = live_factory(PARLEY_TRUSTED_PROXIES="1", PARLEY_METRICS_ALLOW="10.0.0.0/8")
    app.start_daphne()
    url = f"{app.url}/metrics"
    # The connection is loopback (the proxy), the client is outside: refused.
    assert httpx.get(url, headers={"X-Forwarded-For": "203.0.113.9"}).status_code == 403
    # What the client wrote left of the proxy's entry is never trusted.
    assert httpx.get(url, headers={"X-Forwarded-For": "10.1.1.1, 203.0.113.9"}).status_code == 403
    assert httpx.get(url, headers={"X-Forwarded-For": "203.0.113.9, 10.1.1.1"}).status_code == 200
    # No header at all: nothing says who the client is.
    assert httpx.get(url).status_code == 403
