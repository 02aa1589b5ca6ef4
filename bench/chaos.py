"""Provider chaos: 100 users chatting while the primary upstream fails in turn.

    .venv/bin/python -m bench.chaos [--users 100] [--phase-seconds 20]

What it does (docs/benchmarks.md, "Provider resilience", explains each number):
1. runs two fake OpenAI-compatible upstreams in this process (tests/fakes/openai_server.py): the
   primary, whose behaviour changes per phase, and a healthy secondary;
2. makes a fresh SQLite database (bench.setup_db's users and conversations) with two models,
   `chaos-primary` (failing over to `chaos-secondary`) and the secondary, and points every
   conversation at the primary;
3. starts one daphne process (Redis from REDIS_URL, a unique key prefix) with short timeouts and
   breaker settings so that every phase shows its effect in seconds;
4. each user holds a WebSocket and sends a message, reads its reply to the end, pauses a little and
   sends again, through the phases: `baseline` (all well), `errors` (every primary request answers
   500 or 503), `hang` (the primary sends headers, then nothing: the first-token timeout),
   `outage` (the primary's port refuses connections), each followed by a calm phase (all well
   again: `calm-1`, `calm-2`, `recovery`), so that each failure meets a closed breaker;
5. prints per phase the replies answered, those the primary failed before their first token and
   how many of them the chain answered (target: all), the time to first token, the time added by a
   failover beyond the failed attempts themselves (target p99 <= 1 s; for a hang, beyond the
   first-token timeout), and when the primary's breaker let it answer again after each calm phase
   began; then the breaker's transitions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bench.load import ROOT, Child, fmt, free_port, log, pct, remove_redis_keys
from tests.fakes import Scenario
from tests.fakes.openai_server import OpenAIFake

# Each failure starts from a healthy primary with a closed breaker: a calm phase between them.
PHASES = ("baseline", "errors", "calm-1", "hang", "calm-2", "outage", "recovery")
CALM = ("calm-1", "calm-2", "recovery")
FIRST_TOKEN_TIMEOUT = 2.0
REPLY = Scenario(tokens=40, rate=80)  # half a second of writing, as a short answer


@dataclass
class Outcome:
    phase: str
    sent: float
    first_text: float | None = None
    ended: float | None = None
    final: dict[str, Any] = field(default_factory=dict)
    problem: str = ""

    @property
    def ttft_ms(self) -> float | None:
        return None if self.first_text is None else (self.first_text - self.sent) * 1000

    @property
    def answered(self) -> bool:
        return self.final.get("type") == "done" and self.final.get("status") == "complete"

    @property
    def routing(self) -> dict[str, Any]:
        return self.final.get("routing") or {}

    @property
    def primary_failed_first(self) -> bool:
        """The primary failed (or was refused by its breaker) before this reply's first token."""
        return bool(self.routing.get("attempts") or self.routing.get("failover"))

    @property
    def codes(self) -> list[str]:
        return [attempt["code"] for attempt in self.routing.get("attempts", [])]

    @property
    def added_ms(self) -> float | None:
        """Time to first token beyond the failed attempts' own time: backoff, readmission, the next model."""
        if self.ttft_ms is None or not self.routing.get("failover"):
            return None
        return self.ttft_ms - sum(attempt["ms"] for attempt in self.routing.get("attempts", []))


class Chaos:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="parley-chaos-"))
        self.prefix = f"parley-chaos-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
        self.outcomes: list[Outcome] = []
        self.phase = "baseline"
        self.phase_started: dict[str, float] = {}
        self.children: list[Child] = []

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "DJANGO_SETTINGS_MODULE": "parley.settings", "DATABASE_URL": f"sqlite:///{self.tmp / 'chaos.sqlite3'}",
            "REDIS_URL": self.redis_url, "PARLEY_KEY_PREFIX": self.prefix, "PARLEY_CELERY_QUEUE": self.prefix,
            "PARLEY_VAR_DIR": str(self.tmp), "OPENAI_BASE_URL": self.primary.base_url, "OPENAI_API_KEY": "sk-chaos",
            "PARLEY_DEMO_MODEL": "0", "LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1",
            "PROVIDER_FIRST_TOKEN_TIMEOUT": str(FIRST_TOKEN_TIMEOUT), "PROVIDER_CONNECT_TIMEOUT": "2",
            "PARLEY_RETRY_ATTEMPTS": "2", "PARLEY_RETRY_BASE_SECONDS": "0.2", "PARLEY_RETRY_MAX_BACKOFF_SECONDS": "1",
            "PARLEY_BREAKER_FAILURES": "10", "PARLEY_BREAKER_WINDOW_SECONDS": "10",
            "PARLEY_BREAKER_COOLDOWN_SECONDS": str(self.args.cooldown),
        })
        return env

    def setup_database(self) -> None:
        env = self.env()
        subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True)
        out = subprocess.run(
            [sys.executable, "-m", "bench.setup_db", "--upstream", self.primary.base_url, "--users", str(self.args.users),
             "--conversations", "1"], cwd=ROOT, env=env, check=True, capture_output=True, text=True,
        ).stdout
        self.users = json.loads(out.strip().splitlines()[-1])["users"]
        chain = (
            "from chat.models import ChatModel, Conversation, FailoverLink\n"
            f"p = ChatModel.objects.create(name='chaos-primary', label='Primary', provider='openai', base_url='{self.primary.base_url}',"
            " input_price_per_million=1, output_price_per_million=1, sort_order=1)\n"
            f"s = ChatModel.objects.create(name='chaos-secondary', label='Secondary', provider='openai', base_url='{self.secondary.base_url}',"
            " input_price_per_million=2, output_price_per_million=2, sort_order=2)\n"
            "FailoverLink.objects.create(model=p, fallback=s, position=1)\n"
            "Conversation.objects.update(model=p)\n"
        )
        subprocess.run([sys.executable, "manage.py", "shell", "-c", chain], cwd=ROOT, env=env, check=True)

    def start_daphne(self) -> str:
        port = free_port()
        child = Child("daphne", [sys.executable, "-m", "parley.serve", "-b", "127.0.0.1", "-p", str(port), "parley.asgi:application"],
                      self.env(), self.tmp / "daphne.log").start()
        self.children.append(child)
        child.wait_for_port(port)
        self.daphne = child
        return f"ws://127.0.0.1:{port}/ws/chat/"

    async def set_phase(self, phase: str) -> None:
        """The primary's behaviour for the phase (the outage stops its server: connections are refused)."""
        self.phase = phase
        self.phase_started[phase] = time.monotonic()
        if phase == "outage":
            await self.primary.stop()
        elif self.primary._runner is None:  # back after the outage, on the same port
            await self.primary.start(self.primary_port)
        self.primary.scenario = {
            "errors": Scenario(kind="status", status=random.choice((500, 503)), tokens=REPLY.tokens),
            "hang": Scenario(kind="slow_first", delay=60, tokens=REPLY.tokens),
        }.get(phase, REPLY)
        log(f"phase {phase}")

    async def user(self, index: int, url: str, stop_at: float) -> None:
        user = self.users[index]
        conversation = user["conversations"][0]
        await asyncio.sleep(random.uniform(0, 2))
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(url, headers={"Authorization": f"Bearer {user['token']}"}, max_msg_size=0)
            while time.monotonic() < stop_at:
                outcome = Outcome(self.phase, time.monotonic())
                await ws.send_str(orjson.dumps({"type": "send", "conversation": conversation, "content": "Tell me something."}).decode())
                try:
                    async with asyncio.timeout(90):
                        while True:
                            message = await ws.receive()
                            if message.type != aiohttp.WSMsgType.TEXT:
                                outcome.problem = f"socket ended: {message.type}"
                                break
                            event = orjson.loads(message.data)
                            if event["type"] == "delta" and outcome.first_text is None:
                                outcome.first_text = time.monotonic()
                            elif event["type"] in ("done", "error"):
                                if event["type"] == "error" and event.get("message") is None:
                                    outcome.problem = event["code"]  # refused before it started (busy, a limit)
                                outcome.final = event
                                break
                except TimeoutError:
                    outcome.problem = "no final event within 90 s"
                outcome.ended = time.monotonic()
                self.outcomes.append(outcome)
                if outcome.problem.startswith("socket"):
                    return
                await asyncio.sleep(random.uniform(0.2, 1.0))
            await ws.close()

    async def run(self) -> dict[str, Any]:
        self.secondary = await OpenAIFake(REPLY).start()
        self.primary = await OpenAIFake(REPLY).start()
        self.primary_port = self.primary.port
        try:
            self.setup_database()
            url = self.start_daphne()
            log(f"{self.args.users} users, {self.args.phase_seconds:g} s a phase; daphne pid {self.daphne.pid}")
            total = self.args.phase_seconds * len(PHASES)
            began = time.monotonic()
            users = [asyncio.create_task(self.user(i, url, began + total)) for i in range(self.args.users)]
            for phase in PHASES:
                await self.set_phase(phase)
                await asyncio.sleep(self.args.phase_seconds)
            await asyncio.gather(*users)
            return self.report()
        finally:
            for child in self.children:
                child.stop()
            await self.primary.stop()
            await self.secondary.stop()
            remove_redis_keys(self.redis_url, self.prefix)

    def transitions(self) -> list[tuple[str, str, str, str]]:
        with closing(sqlite3.connect(self.tmp / "chaos.sqlite3")) as db:
            return db.execute(
                "SELECT created, from_state, to_state, reason FROM breakers_breakerevent WHERE model = 'chaos-primary' ORDER BY id"
            ).fetchall()

    def report(self) -> dict[str, Any]:
        phases = []
        for phase in PHASES:
            mine = [o for o in self.outcomes if o.phase == phase]
            failed_first = [o for o in mine if o.primary_failed_first]
            added = [o.added_ms for o in failed_first if o.added_ms is not None]
            ttft = [o.ttft_ms for o in mine if o.ttft_ms is not None]
            hung = [o.added_ms for o in failed_first if "timeout" in o.codes and o.added_ms is not None]
            codes: dict[str, int] = {}
            for outcome in failed_first:
                for code in outcome.codes or ["breaker_open"]:
                    codes[code] = codes.get(code, 0) + 1
            phases.append({
                "phase": phase, "replies": len(mine), "answered": sum(o.answered for o in mine),
                "primary_failed_first": len(failed_first), "answered_by_chain": sum(o.answered for o in failed_first),
                "by_secondary": sum(o.final.get("model") == "chaos-secondary" for o in mine),
                "ttft_p50": pct(ttft, 50), "ttft_p99": pct(ttft, 99),
                "added_p50": pct(added, 50), "added_p99": pct(added, 99), "added_max": max(added, default=None),
                "timed_out": len(hung), "after_timeout_p99": pct(hung, 99), "after_timeout_max": max(hung, default=None),
                "why_primary_failed": codes,
                "problems": sorted({o.problem for o in mine if o.problem}),
            })
        back = {}
        for calm in CALM:
            answered = sorted(o.sent for o in self.outcomes if o.phase == calm and o.final.get("model") == "chaos-primary")
            back[calm] = None if not answered else answered[0] - self.phase_started[calm]
        return {
            "users": self.args.users, "phase_seconds": self.args.phase_seconds, "cooldown": self.args.cooldown,
            "first_token_timeout": FIRST_TOKEN_TIMEOUT, "phases": phases,
            "primary_back_after_s": back,
            "transitions": self.transitions(),
        }


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"{result['users']} users, {result['phase_seconds']:g} s a phase, first-token timeout {result['first_token_timeout']:g} s,"
        f" breaker cool-down {result['cooldown']:g} s",
        "",
        "| phase | replies | answered | primary failed first (why) | answered by the chain | TTFT p50 / p99 ms | added by failover p50 / p99 / max ms | after a timeout: replies, added p99 / max ms | problems |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for p in result["phases"]:
        lines.append(
            f"| {p['phase']} | {p['replies']} | {p['answered']} | {p['primary_failed_first']}"
            f" ({', '.join(f'{code} {n}' for code, n in sorted(p['why_primary_failed'].items())) or '-'}) |"
            f" {p['answered_by_chain']} | {fmt(p['ttft_p50'], 0)} / {fmt(p['ttft_p99'], 0)} |"
            f" {fmt(p['added_p50'], 0)} / {fmt(p['added_p99'], 0)} / {fmt(p['added_max'], 0)} |"
            f" {p['timed_out']}: {fmt(p['after_timeout_p99'], 0)} / {fmt(p['after_timeout_max'], 0)} | {', '.join(p['problems']) or '-'} |"
        )
    back = ", ".join(f"{calm} {fmt(seconds, 1)} s" for calm, seconds in result["primary_back_after_s"].items())
    lines += ["", f"The primary answering again after the calm phase began: {back}.", "", "Breaker transitions of the primary:"]
    lines += [f"- {created}: {before} -> {after} ({reason})" for created, before, after, reason in result["transitions"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--phase-seconds", type=float, default=15.0)
    parser.add_argument("--cooldown", type=float, default=5.0, help="PARLEY_BREAKER_COOLDOWN_SECONDS")
    parser.add_argument("--out", help="also write the results as JSON here")
    args = parser.parse_args(argv)
    result = asyncio.run(Chaos(args).run())
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2, default=str))
    print(markdown(result))


if __name__ == "__main__":
    main()
