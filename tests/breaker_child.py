"""A process of its own that uses one circuit breaker, driven by tests/test_breakers_processes.py.

    python -m tests.breaker_child ENDPOINT MODEL

Reads one command a line from stdin and answers each with one JSON line on stdout:
    fail N CODE      report N retryable failures (sync API)            -> {"done": true}
    check            one check (sync API)                              -> the Gate
    acheck           one check (async API, on an event loop)           -> the Gate
    probe SECONDS    check until given the probe, at most SECONDS      -> the last Gate
    report ok|fail   report the probe's outcome (async API)            -> {"done": true}
    quit             wait for the history rows handed to other threads, and exit
It answers {"ready": true} once Django is set up.
"""

import asyncio
import json
import os
import sys
import time
from dataclasses import asdict


def main(endpoint: str, model: str) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "parley.settings")
    import django

    django.setup()
    from breakers import circuit

    def say(answer: object) -> None:
        print(json.dumps(answer), flush=True)

    say({"ready": True, "pid": os.getpid()})
    for line in sys.stdin:
        command, *args = line.split()
        if command == "fail":
            for _ in range(int(args[0])):
                circuit.record(endpoint, model, ok=False, code=args[1])
            say({"done": True})
        elif command == "check":
            say(asdict(circuit.check(endpoint, model)))
        elif command == "acheck":
            say(asdict(asyncio.run(circuit.acheck(endpoint, model))))
        elif command == "probe":
            deadline = time.monotonic() + float(args[0])
            gate = circuit.check(endpoint, model)
            while not gate.probe and time.monotonic() < deadline:
                time.sleep(0.02)
                gate = circuit.check(endpoint, model)
            say(asdict(gate))
        elif command == "report":
            asyncio.run(circuit.arecord(endpoint, model, ok=args[0] == "ok", code="" if args[0] == "ok" else "overloaded", probe=True))
            say({"done": True})
        elif command == "quit":
            circuit.wait_for_event_writes()
            return


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
