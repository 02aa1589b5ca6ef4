"""Circuit breakers against the suite's real Redis: a breaker opens after enough retryable failures
within its window, refuses fast while open, lets exactly one probe through after its cool-down
however many callers race for it, and closes or opens again by the probe's outcome; a lost probe is
released by its TTL; forced modes win; every change of state is written to the history once."""

import asyncio
import logging
import threading
import time
from collections.abc import Iterator

import pytest
from django.db import connections, transaction
from redis.crc import key_slot

from breakers import circuit, control
from breakers.models import Breaker, BreakerEvent
from breakers.scripts import breaker_keys
from parley.embedded_redis import free_port

pytestmark = pytest.mark.django_db(transaction=True)

ENDPOINT, MODEL = "local", "llama-3"
COOLDOWN = 0.4


@pytest.fixture(autouse=True)
def short_breakers(settings, transactional_db) -> Iterator[None]:
    """Three failures within a second open a breaker, for 0.4 s; a probe holds it for 5 s at most."""
    settings.PARLEY_BREAKER_FAILURES = 3
    settings.PARLEY_BREAKER_WINDOW_SECONDS = 1.0
    settings.PARLEY_BREAKER_COOLDOWN_SECONDS = COOLDOWN
    settings.PARLEY_BREAKER_PROBE_SECONDS = 5.0
    yield
    circuit.wait_for_event_writes()  # before the test's end empties the tables


def fail(times: int, code: str = "overloaded") -> None:
    for _ in range(times):
        circuit.record(ENDPOINT, MODEL, ok=False, code=code)


async def in_thread(fn, *args):  # type: ignore[no-untyped-def]
    """Sync code from a test's event loop, on a thread whose database connection is closed after."""

    def run():  # type: ignore[no-untyped-def]
        try:
            return fn(*args)
        finally:
            connections.close_all()

    return await asyncio.to_thread(run)


def written():  # type: ignore[no-untyped-def]
    """The history, once this process's transitions handed to deferred's threads are in it."""
    circuit.wait_for_event_writes()
    return BreakerEvent.objects


def history() -> list[tuple[str, str]]:
    circuit.wait_for_event_writes()
    return list(BreakerEvent.objects.filter(endpoint=ENDPOINT, model=MODEL).order_by("id").values_list("from_state", "to_state"))


def test_it_opens_after_the_failures_within_the_window_and_not_one_before():
    fail(2)
    assert circuit.check(ENDPOINT, MODEL) == circuit.Gate(allowed=True, probe=False, state="closed", retry_in=0.0)
    assert history() == []

    fail(1, code="rate_limited")
    gate = circuit.check(ENDPOINT, MODEL)
    assert (gate.allowed, gate.probe, gate.state) == (False, False, "open")
    assert 0 < gate.retry_in <= COOLDOWN
    event = written().get()
    assert (event.from_state, event.to_state, event.failures, event.by) == ("closed", "open", 3, None)
    assert event.reason == "3 failures within 1 s, the last rate_limited"


def test_failures_that_fell_out_of_the_window_do_not_count():
    fail(2)
    time.sleep(1.1)
    fail(2)
    assert circuit.check(ENDPOINT, MODEL).state == "closed"
    fail(1)
    assert circuit.check(ENDPOINT, MODEL).state == "open"


def test_successes_do_not_clear_the_window():
    fail(2)
    for _ in range(5):
        circuit.record(ENDPOINT, MODEL, ok=True)
    fail(1)
    assert circuit.check(ENDPOINT, MODEL).state == "open"


def test_breakers_are_per_endpoint_and_model():
    fail(3)
    assert circuit.check(ENDPOINT, "other-model").allowed
    assert circuit.check("other-endpoint", MODEL).allowed
    assert not circuit.check(ENDPOINT, MODEL).allowed


def test_an_open_breaker_refuses_fast_then_lets_one_probe_through_whose_success_closes_it():
    fail(3)
    started = time.monotonic()
    refusals = [circuit.check(ENDPOINT, MODEL) for _ in range(50)]
    assert time.monotonic() - started < 0.3  # fast: no waiting, no provider
    assert all(not gate.allowed and gate.state == "open" for gate in refusals)

    time.sleep(COOLDOWN)
    probe = circuit.check(ENDPOINT, MODEL)
    assert (probe.allowed, probe.probe, probe.state, probe.retry_in) == (True, True, "half_open", 0.0)
    others = circuit.check(ENDPOINT, MODEL)
    assert (others.allowed, others.probe, others.state) == (False, False, "half_open")
    assert 0 < others.retry_in <= 5.0

    circuit.record(ENDPOINT, MODEL, ok=True, probe=True)
    assert circuit.check(ENDPOINT, MODEL) == circuit.Gate(True, False, "closed", 0.0)
    assert history() == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]


def test_a_failed_probe_opens_it_for_another_cool_down():
    fail(3)
    time.sleep(COOLDOWN)
    assert circuit.check(ENDPOINT, MODEL).probe
    circuit.record(ENDPOINT, MODEL, ok=False, code="timeout", probe=True)
    gate = circuit.check(ENDPOINT, MODEL)
    assert (gate.allowed, gate.state) == (False, "open") and COOLDOWN / 2 < gate.retry_in <= COOLDOWN
    reopened = written().get(from_state="half_open")
    assert (reopened.to_state, reopened.failures, reopened.reason) == ("open", 1, "the probe failed (timeout)")

    time.sleep(COOLDOWN)
    assert circuit.check(ENDPOINT, MODEL).probe  # a new cool-down, a new probe
    assert history() == [("closed", "open"), ("open", "half_open"), ("half_open", "open"), ("open", "half_open")]


def test_a_change_of_state_is_kept_though_the_callers_transaction_rolls_back():
    with pytest.raises(RuntimeError), transaction.atomic():
        fail(3)  # a Celery task's work that then fails
        raise RuntimeError("the task's own work failed")
    assert not circuit.check(ENDPOINT, MODEL).allowed  # Redis changed: the history must say so
    assert history() == [("closed", "open")]


def test_late_reports_of_calls_admitted_before_it_opened_change_nothing():
    fail(3)
    fail(5)  # calls that were already running
    circuit.record(ENDPOINT, MODEL, ok=True, probe=True)  # no probe was given
    time.sleep(COOLDOWN)
    assert circuit.check(ENDPOINT, MODEL).probe
    fail(3)  # not the probe: only the probe decides a half-open breaker
    assert not circuit.check(ENDPOINT, MODEL).allowed
    assert history() == [("closed", "open"), ("open", "half_open")]


def test_a_probe_whose_caller_never_reports_is_released_by_its_ttl(settings):
    settings.PARLEY_BREAKER_PROBE_SECONDS = 0.3
    fail(3)
    time.sleep(COOLDOWN)
    assert circuit.check(ENDPOINT, MODEL).probe  # and its caller dies
    assert not circuit.check(ENDPOINT, MODEL).allowed
    time.sleep(0.35)
    second = circuit.check(ENDPOINT, MODEL)
    assert (second.allowed, second.probe, second.state) == (True, True, "half_open")
    assert not circuit.check(ENDPOINT, MODEL).allowed
    circuit.record(ENDPOINT, MODEL, ok=True, probe=True)
    assert circuit.check(ENDPOINT, MODEL).state == "closed"
    # The probe changing hands is no change of state.
    assert history() == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]


def test_one_probe_among_many_threads():
    fail(3)
    time.sleep(COOLDOWN)
    start = threading.Barrier(24)
    gates: list[circuit.Gate] = []

    def caller() -> None:
        start.wait()
        gates.append(circuit.check(ENDPOINT, MODEL))
        connections.close_all()  # the one that wrote the transition opened a connection of its own

    threads = [threading.Thread(target=caller) for _ in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(gates) == 24
    assert sum(gate.probe for gate in gates) == 1 and sum(gate.allowed for gate in gates) == 1
    assert history() == [("closed", "open"), ("open", "half_open")]


async def test_one_probe_among_many_tasks_of_an_event_loop():
    for _ in range(3):
        await circuit.arecord(ENDPOINT, MODEL, ok=False, code="provider_unavailable")
    assert (await circuit.acheck(ENDPOINT, MODEL)).state == "open"
    await asyncio.sleep(COOLDOWN)
    # More at once than the loop's client has connections: the rest wait for one, none fails open.
    gates = await asyncio.gather(*(circuit.acheck(ENDPOINT, MODEL) for _ in range(circuit.ASYNC_CONNECTIONS + 150)))
    probes = [gate for gate in gates if gate.probe]
    assert len(probes) == 1 and probes[0].allowed and sum(gate.allowed for gate in gates) == 1
    assert {gate.state for gate in gates} == {"half_open"}

    await circuit.arecord(ENDPOINT, MODEL, ok=True, probe=True)
    assert (await circuit.acheck(ENDPOINT, MODEL)).allowed
    # Written off the event loop, by deferred's threads, once each.
    rows = await in_thread(history)
    assert rows == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]


def test_forced_open_refuses_every_call_and_forced_closed_lets_them_all_through(django_user_model):
    admin = django_user_model.objects.create_superuser("root", "root@example.com", "pw-root-123456")
    control.force(ENDPOINT, MODEL, Breaker.Mode.FORCED_OPEN, by=admin)
    gate = circuit.check(ENDPOINT, MODEL)
    assert (gate.allowed, gate.probe, gate.state, gate.retry_in) == (False, False, "forced_open", COOLDOWN)
    time.sleep(COOLDOWN)
    assert not circuit.check(ENDPOINT, MODEL).allowed  # no probe: the admin decides

    control.force(ENDPOINT, MODEL, Breaker.Mode.FORCED_CLOSED, by=admin)
    fail(10)
    assert circuit.check(ENDPOINT, MODEL) == circuit.Gate(True, False, "forced_closed", 0.0)

    control.force(ENDPOINT, MODEL, Breaker.Mode.AUTOMATIC, by=admin)
    assert circuit.check(ENDPOINT, MODEL).state == "closed"  # the failures while forced were not counted
    fail(3)
    assert circuit.check(ENDPOINT, MODEL).state == "open"
    events = list(written().order_by("id").values_list("from_state", "to_state", "by__username"))
    assert events == [
        ("closed", "forced_open", "root"), ("forced_open", "forced_closed", "root"), ("forced_closed", "closed", "root"),
        ("closed", "open", None),
    ]


def test_automatic_again_closes_an_open_breaker_and_forcing_twice_changes_nothing(django_user_model):
    admin = django_user_model.objects.create_superuser("root", "root@example.com", "pw-root-123456")
    fail(3)
    event = control.force(ENDPOINT, MODEL, Breaker.Mode.AUTOMATIC, by=admin)
    assert event is not None and (event.from_state, event.to_state) == ("open", "closed")
    assert circuit.check(ENDPOINT, MODEL).allowed
    assert control.force(ENDPOINT, MODEL, Breaker.Mode.AUTOMATIC, by=admin) is None
    control.force(ENDPOINT, MODEL, Breaker.Mode.FORCED_OPEN, by=admin)
    assert control.force(ENDPOINT, MODEL, Breaker.Mode.FORCED_OPEN, by=admin) is None
    assert written().count() == 3
    with pytest.raises(ValueError):
        control.force(ENDPOINT, MODEL, "sideways", by=admin)


async def test_a_forced_mode_redis_lost_comes_back_from_the_database(django_user_model, redis_client):
    admin = await django_user_model.objects.acreate(username="root", is_staff=True, is_superuser=True)
    await in_thread(control.force, ENDPOINT, MODEL, Breaker.Mode.FORCED_OPEN, admin)
    redis_client.delete(*breaker_keys(ENDPOINT, MODEL))  # a restart without persistence, an eviction
    assert (await circuit.acheck(ENDPOINT, MODEL)).state == "forced_open"
    assert redis_client.hget(breaker_keys(ENDPOINT, MODEL)[0], "mode") == b"forced_open"  # seeded once
    redis_client.delete(*breaker_keys(ENDPOINT, MODEL))
    assert (await in_thread(circuit.check, ENDPOINT, MODEL)).state == "forced_open"


@pytest.fixture
def redis_down(settings, monkeypatch) -> None:
    """Nothing listens where the breakers look for Redis."""
    monkeypatch.setattr(circuit, "_rest_until", {})
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"


def test_without_redis_calls_go_ahead_and_a_warning_is_logged(redis_down, caplog):
    with caplog.at_level(logging.WARNING, logger="breakers.circuit"):
        assert circuit.check(ENDPOINT, MODEL) == circuit.FAIL_OPEN
        circuit.record(ENDPOINT, MODEL, ok=False, code="overloaded")
        circuit.record(ENDPOINT, MODEL, ok=True, probe=True)
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 1 and "Circuit breakers fail open: Redis did not answer" in warnings[0]  # then it rests


async def test_without_redis_async_calls_go_ahead_too(redis_down, caplog):
    with caplog.at_level(logging.WARNING, logger="breakers.circuit"):
        assert await circuit.acheck(ENDPOINT, MODEL) == circuit.FAIL_OPEN
        await circuit.arecord(ENDPOINT, MODEL, ok=False, code="timeout")
    assert any("fail open" in record.getMessage() for record in caplog.records)


def test_a_breaker_needs_an_endpoint_and_a_model():
    with pytest.raises(ValueError):
        circuit.check("", MODEL)
    with pytest.raises(ValueError):
        circuit.record("a|b", MODEL, ok=False)


def test_all_of_a_breakers_keys_share_one_hash_tag_under_the_prefix(settings):
    keys = breaker_keys(ENDPOINT, "org/model:8b")
    assert all(key.startswith(f"{settings.PARLEY_KEY_PREFIX}:breaker:{{local|org/model:8b}}") for key in keys)
    assert len({key_slot(key.encode()) for key in keys}) == 1
