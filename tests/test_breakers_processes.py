"""One breaker shared by separate processes through Redis: failures reported in one open it for
all; after the cool-down exactly one process, of several racing, gets the probe; its outcome
decides for everyone; each change of state is written to the history once, by the process that
made it."""

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from breakers import circuit
from breakers.models import BreakerEvent
from tests.live import ROOT, child_env

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live]

ENDPOINT, MODEL = "local", "llama-3"
COOLDOWN = 1.0
BREAKER_SETTINGS = {
    "PARLEY_BREAKER_FAILURES": "3", "PARLEY_BREAKER_WINDOW_SECONDS": "10",
    "PARLEY_BREAKER_COOLDOWN_SECONDS": str(COOLDOWN), "PARLEY_BREAKER_PROBE_SECONDS": "10",
}


class Child:
    """A `python -m tests.breaker_child` process: one command a line in, one JSON answer a line out."""

    def __init__(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.breaker_child", ENDPOINT, MODEL], cwd=ROOT, env=env, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )

    def send(self, command: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()

    def answer(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line, f"the child exited with {self.process.wait(5)}"
        return json.loads(line)

    def ask(self, command: str) -> dict[str, Any]:
        self.send(command)
        return self.answer()

    def quit(self) -> None:
        if self.process.poll() is None:
            self.send("quit")
            self.process.wait(10)


@pytest.fixture
def children(settings, transactional_db) -> Iterator[list[Child]]:
    """Starts children against the test database, Redis and key prefix, with the test's breaker settings."""
    for name, value in BREAKER_SETTINGS.items():
        setattr(settings, name, float(value) if "SECONDS" in name else int(value))
    started: list[Child] = []
    yield started  # start() adds to it
    for child in started:
        child.quit()
    for child in started:
        if child.process.poll() is None:
            child.process.kill()
            child.process.wait(5)
    circuit.wait_for_event_writes()


def start(children: list[Child], count: int) -> list[Child]:
    new = [Child(child_env(**BREAKER_SETTINGS)) for _ in range(count)]
    children.extend(new)
    for child in new:
        assert child.answer()["ready"]
    return new


def history() -> list[tuple[str, str]]:
    circuit.wait_for_event_writes()
    return list(BreakerEvent.objects.order_by("id").values_list("from_state", "to_state"))


async def test_failures_in_one_process_open_the_breaker_in_another_and_its_probe_decides(children):
    [other] = await _in_thread(start, children, 1)
    assert (await circuit.acheck(ENDPOINT, MODEL)).state == "closed"
    await _in_thread(other.ask, "fail 3 overloaded")

    gate = await circuit.acheck(ENDPOINT, MODEL)  # this process never saw a failure
    assert (gate.allowed, gate.state) == (False, "open") and 0 < gate.retry_in <= COOLDOWN

    probe = await _in_thread(other.ask, f"probe {COOLDOWN + 5}")
    assert (probe["allowed"], probe["probe"], probe["state"]) == (True, True, "half_open")
    refused = await circuit.acheck(ENDPOINT, MODEL)
    assert (refused.allowed, refused.probe, refused.state) == (False, False, "half_open")

    assert (await _in_thread(other.ask, "report ok")) == {"done": True}
    assert (await circuit.acheck(ENDPOINT, MODEL)) == circuit.Gate(True, False, "closed", 0.0)
    await _in_thread(other.quit)
    assert await _in_thread(history) == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]


def test_of_several_processes_racing_after_the_cool_down_exactly_one_probes(children):
    racers = start(children, 3)
    for _ in range(3):
        circuit.record(ENDPOINT, MODEL, ok=False, code="rate_limited")
    assert not circuit.check(ENDPOINT, MODEL).allowed
    time.sleep(COOLDOWN + 0.05)

    for index, racer in enumerate(racers):  # all asked before any answer is read
        racer.send("acheck" if index % 2 else "check")
    gates = [racer.answer() for racer in racers]
    assert sum(gate["probe"] for gate in gates) == 1 and sum(gate["allowed"] for gate in gates) == 1
    assert {gate["state"] for gate in gates} == {"half_open"}
    assert not circuit.check(ENDPOINT, MODEL).allowed  # nor this process

    winner = racers[[gate["probe"] for gate in gates].index(True)]
    winner.ask("report fail")
    gate = circuit.check(ENDPOINT, MODEL)
    assert (gate.allowed, gate.state) == (False, "open")
    for racer in racers:
        racer.quit()
    # Each change once: this process opened it, the winner took the probe and reopened it.
    assert history() == [("closed", "open"), ("open", "half_open"), ("half_open", "open")]
    assert BreakerEvent.objects.get(from_state="half_open").reason == "the probe failed (overloaded)"


async def _in_thread(fn, *args):  # type: ignore[no-untyped-def]
    import asyncio

    from django.db import connections

    def run():  # type: ignore[no-untyped-def]
        try:
            return fn(*args)
        finally:
            connections.close_all()

    return await asyncio.to_thread(run)
