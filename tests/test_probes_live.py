"""/healthz and /readyz on a real daphne: their JSON, and readiness failing for each part."""

import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from django.db import connection

from tests.live import free_port

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

CHECKS = {"database", "migrations", "redis", "broker"}


def test_healthz_answers_a_probe_by_ip_without_cookies_or_an_allowed_host(live_app):
    # A probe reaches the container by its address: not in ALLOWED_HOSTS, which would be a 400.
    response = httpx.get(f"{live_app.url}/healthz", headers={"Host": "10.1.2.3:8000"})
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert "set-cookie" not in response.headers
    assert response.headers["cache-control"] == "no-store"
    # Every other path still keeps Django's ALLOWED_HOSTS check.
    assert httpx.get(f"{live_app.url}/accounts/login/", headers={"Host": "10.1.2.3:8000"}).status_code == 400


def test_readyz_names_every_check_with_its_time(live_app):
    # A process's first look at the migrations loads their graph, which a busy machine may take
    # longer than the probe's timeout over: the next probe finds the answer remembered.
    deadline = time.monotonic() + 10
    while (response := httpx.get(f"{live_app.url}/readyz", headers={"Host": "10.1.2.3"})).status_code != 200:
        assert time.monotonic() < deadline, response.text
        time.sleep(0.5)
    body = response.json()
    assert body["status"] == "ok"
    assert set(body["checks"]) == CHECKS
    for check in body["checks"].values():
        assert check["ok"] is True
        assert isinstance(check["ms"], float | int) and check["ms"] >= 0
        assert "error" not in check


def test_readyz_is_503_naming_redis_and_the_broker_when_redis_is_down(live_factory):
    app = live_factory(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0", PARLEY_PROBE_TIMEOUT_SECONDS="5")
    app.start_daphne()
    response = httpx.get(f"{app.url}/readyz", timeout=10)
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert response.json()["status"] == "unavailable"
    assert checks["redis"]["ok"] is False and "Connection" in checks["redis"]["error"]
    assert checks["broker"]["ok"] is False
    assert checks["database"]["ok"] is True and checks["migrations"]["ok"] is True


@pytest.fixture
def hung_redis() -> Iterator[int]:
    """A port that accepts connections and never answers, like a Redis that hangs."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(2)
    for sock in held:
        sock.close()
    server.close()


def test_a_hung_redis_does_not_hang_the_probe(live_factory, hung_redis):
    app = live_factory(REDIS_URL=f"redis://127.0.0.1:{hung_redis}/0", PARLEY_PROBE_TIMEOUT_SECONDS="0.5")
    app.start_daphne()
    started = time.monotonic()
    response = httpx.get(f"{app.url}/readyz", timeout=10)
    assert time.monotonic() - started < 3
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["redis"]["ok"] is False
    assert checks["redis"]["ms"] < 2000
    assert checks["database"]["ok"] is True


def test_readyz_is_503_while_a_migration_is_not_applied(live_factory):
    with connection.cursor() as cursor:
        cursor.execute("SELECT id, app, name, applied FROM django_migrations WHERE app = 'chat' ORDER BY id DESC LIMIT 1")
        row = cursor.fetchone()
        cursor.execute("DELETE FROM django_migrations WHERE id = %s", [row[0]])
    try:
        app = live_factory(PARLEY_PROBE_TIMEOUT_SECONDS="5")  # room for loading the migration graph
        app.start_daphne()
        response = httpx.get(f"{app.url}/readyz", timeout=10)
        assert response.status_code == 503
        checks = response.json()["checks"]
        assert checks["migrations"]["ok"] is False
        assert f"chat.{row[2]}" in checks["migrations"]["error"]
        assert checks["redis"]["ok"] is True and checks["database"]["ok"] is True
    finally:
        with connection.cursor() as cursor:
            cursor.execute("INSERT INTO django_migrations (id, app, name, applied) VALUES (%s, %s, %s, %s)", list(row))
    # Applied again, the same process says so (the result is cached only once true).
    response = httpx.get(f"{app.url}/readyz", timeout=10)
    assert response.status_code == 200, response.text
