"""Agent runs under load: how late a worker's events reach a browser-like client, and what the web
process spends per event. One command starts everything, measures, prints the tables and stops.

    .venv/bin/python -m bench.agents --runs 100 --workers 2

What it does (docs/benchmarks.md, "Agent runs", explains each number):
1. a fresh database: a SQLite file in a temp dir, or, when DATABASE_URL names a PostgreSQL server,
   a throwaway database on it (created here, dropped at the end); migrations; one bench user per
   run, with an API token and a conversation, on a plan without limits (bench.setup_db);
2. Redis from REDIS_URL, else an embedded one; every key under a unique prefix, removed at the end;
3. the fake upstream (bench.upstream) behind the model `bench-agent`: two `calculate` calls per
   answer until the request holds six results, then a 20-token answer, each answer written at
   once; so a run is 10 steps, 4 model steps and 6 tool steps;
4. one daphne (`python -m parley.serve`) and --workers Celery workers (`--concurrency 1` each, on
   a queue of their own), with PARLEY_MAX_ACTIVE_RUNS at least --runs;
5. the tap, a process of its own (so that the clients' event loop does not delay it): one
   blocking XREAD over every run's log. The moment it receives an entry stands for the moment the
   worker appended it; it also times its own lag with probe entries it appends every 20 ms;
6. a warm-up run per worker; then --runs runs started at once (`POST /api/conversations/<id>/runs`),
   each followed, right after its start, by its owner's WebSocket (`attach_run` from "0-0");
7. an event's latency is the client's receive time minus the tap's for the same run and cursor,
   both read from CLOCK_MONOTONIC, which every process on the machine shares.

The driver (one asyncio process, aiohttp) shares the machine's cores with daphne, the workers,
Redis, the upstream and the tap; the CPU of each is reported.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from bench.load import (
    CLK_TCK, ROOT, BenchUser, Child, cpu_seconds, fmt, free_port, log, machine_busy_seconds, machine_facts, pct, redis_server_pid,
    remove_redis_keys,
)

GOAL = "Add up a few numbers, one step at a time, and say the total."
MODEL = "bench-agent"  # bench.setup_db: 4 model steps and 6 tool steps a run
STEPS_PER_RUN = 10
PROBE_SECONDS = 0.02


# The tap: its own process ------------------------------------------------------------------------


def tap(out: Path, first: int, last: int) -> None:
    """XREAD every run log from `first` to `last` until SIGTERM; write (run, cursor, receive time)
    of every entry, and the probes' lag, to `out` as JSON."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "parley.settings")
    import redis
    from django.conf import settings

    from streaming.keys import run_events_key

    # Ahead of the processes it times, where allowed (root): a tap that waits for a core would
    # make every latency look shorter than it is. Its threads inherit this.
    with contextlib.suppress(PermissionError):
        os.setpriority(os.PRIO_PROCESS, 0, -10)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    url = os.environ["REDIS_URL"]
    client = redis.Redis.from_url(url)
    runs = {run_events_key(run_id): run_id for run_id in range(first, last + 1)}
    positions = dict.fromkeys(runs, "0-0")
    probe_key = f"{settings.PARLEY_KEY_PREFIX}:bench:tap-probe"
    positions[probe_key] = "0-0"

    def probe() -> None:
        writer = redis.Redis.from_url(url)
        while not stop.wait(PROBE_SECONDS):
            writer.xadd(probe_key, {"t": time.monotonic_ns()}, maxlen=1000)

    threading.Thread(target=probe, daemon=True).start()
    seen: list[tuple[int, str, int]] = []
    lag_us: list[int] = []
    print("tapping", flush=True)
    while not stop.is_set():
        response = client.xread(positions, block=200, count=10_000)
        now = time.monotonic_ns()
        for raw_key, entries in response or []:
            key = raw_key.decode()
            positions[key] = entries[-1][0].decode()
            if key == probe_key:
                lag_us += [(now - int(fields[b"t"])) // 1000 for _, fields in entries]
                continue
            for entry_id, _ in entries:
                cursor = entry_id.decode()
                seen.append((runs[key], cursor, now))
                if cursor.endswith("-1"):  # the run's final event: nothing follows it
                    positions.pop(key, None)
    out.write_text(json.dumps({"events": seen, "probe_lag_us": lag_us}))


# The clients ---------------------------------------------------------------------------------------


@dataclass
class Follower:
    """One bench user's socket, following the one run it starts."""

    user: BenchUser
    ws: aiohttp.ClientWebSocketResponse
    run_id: int = 0
    start_ms: float = 0.0  # the POST that started the run, to its answer
    attach_sent_ns: int = 0
    received: dict[str, tuple[int, str]] = field(default_factory=dict)  # cursor -> (receive time, type)
    duplicates: int = 0
    notices: int = 0
    final: dict[str, Any] | None = None
    problems: list[str] = field(default_factory=list)
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    reader: asyncio.Task[None] | None = None

    async def read(self) -> None:
        try:
            async for message in self.ws:
                now = time.monotonic_ns()
                if message.type != aiohttp.WSMsgType.TEXT:
                    break
                event = orjson.loads(message.data)
                cursor = event.get("cursor")
                if cursor is not None and event.get("run") == self.run_id:
                    if cursor in self.received:
                        self.duplicates += 1
                        continue
                    self.received[cursor] = (now, event["type"])
                    if event["type"] == "run_finished":
                        self.final = event
                        self.finished.set()
                elif event.get("type") == "run":  # the owner's notice of a run that changed
                    self.notices += 1
                else:
                    self.problems.append(message.data[:300])
        finally:
            if not self.finished.is_set():
                self.problems.append("the socket closed before run_finished")
                self.finished.set()

    async def start(self, session: aiohttp.ClientSession, base: str, model: str) -> None:
        conversation = self.user.conversations[0]
        began = time.monotonic_ns()
        async with session.post(f"{base}/api/conversations/{conversation}/runs", json={"goal": GOAL, "model": model},
                                headers=self.user.auth) as response:
            body = await response.read()
        if response.status != 201:
            self.problems.append(f"start: {response.status} {body[:300]!r}")
            self.finished.set()
            return
        self.run_id = orjson.loads(body)["run"]["id"]
        self.attach_sent_ns = time.monotonic_ns()
        self.start_ms = (self.attach_sent_ns - began) / 1e6
        await self.ws.send_str(orjson.dumps({"type": "attach_run", "run": self.run_id, "after": "0-0"}).decode())


# Processes -------------------------------------------------------------------------------------------


def tree_cpu_seconds(pid: int) -> float:
    """CPU of a process and its children, live or ended: a Celery worker runs its tasks in a
    child, and PostgreSQL serves each connection from a child of its postmaster."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    total = sum(int(value) for value in fields[11:15]) / CLK_TCK  # utime, stime, and those of its ended children
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                child = f.read().rpartition(")")[2].split()
        except OSError:
            continue  # it ended meanwhile
        if int(child[1]) == pid:
            total += (int(child[11]) + int(child[12])) / CLK_TCK
    return total


def wait_for_text(child: Child, text: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.log_path.exists() and text in child.log_path.read_text(errors="replace"):
            return
        assert child.process is not None
        if child.process.poll() is not None:
            break
        time.sleep(0.1)
    raise RuntimeError(f"{child.name} never logged {text!r}:\n{child.log_path.read_text(errors='replace')[-3000:]}")


class AgentBench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="parley-bench-agents-"))
        self.prefix = f"parley-bench-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.children: list[Child] = []
        self.workers: list[Child] = []
        self.embedded: Any = None
        self.postgres: tuple[str, str] | None = None  # (the server's URL as given, the throwaway database)
        self.postmaster_pid: int | None = None  # when that server runs on this machine
        self.results: dict[str, Any] = {}

    # Setup -----------------------------------------------------------------------------------------

    def prepare(self) -> None:
        a = self.args
        self.results["machine"] = machine_facts()  # its load average before anything here runs
        self.redis_url = os.environ.get("REDIS_URL", "")
        if not self.redis_url:
            from parley import embedded_redis

            self.embedded = embedded_redis.start()
            self.redis_url = self.embedded.url
        self.redis_pid = redis_server_pid(self.redis_url)
        self.database_url = self.make_database()
        self.upstream = self.start(Child("upstream", [sys.executable, "-m", "bench.upstream", "--port", "0"], dict(os.environ),
                                         self.tmp / "upstream.log"))
        self.upstream_url = self.upstream.wait_for_line("listening on ")
        env = self.env()
        subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True)
        out = subprocess.run([sys.executable, "-m", "bench.setup_db", "--upstream", self.upstream_url, "--users",
                              str(a.runs + a.workers), "--conversations", "1"], cwd=ROOT, env=env, check=True,
                             capture_output=True, text=True).stdout
        data = json.loads(out.strip().splitlines()[-1])
        self.model = data["models"][MODEL]
        self.users = [BenchUser(u["token"], u["conversations"]) for u in data["users"]]
        log(f"database ready ({self.database_label}): {len(self.users)} users")
        port = free_port()
        self.daphne = self.start(Child("daphne", [sys.executable, "-m", "parley.serve", "-b", "127.0.0.1", "-p", str(port),
                                                  "parley.asgi:application"], env, self.tmp / "daphne.log"))
        self.base_url = f"http://127.0.0.1:{port}"
        for index in range(a.workers):
            name = f"worker{index}"
            # As tests/live.py starts them, less beat: the reapers have nothing to do here.
            self.workers.append(self.start(Child(name, [
                sys.executable, "-m", "celery", "-A", "parley", "worker", "-l", "info", "--concurrency", str(a.concurrency),
                "-Q", self.prefix, "-n", f"{name}-{self.prefix}@%h", "--without-gossip", "--without-mingle",
                "--without-heartbeat"], env, self.tmp / f"{name}.log")))
        self.daphne.wait_for_port(port)
        for worker in self.workers:
            wait_for_text(worker, " ready.")
        log(f"daphne on {port} (pid {self.daphne.pid}), {a.workers} workers ready")

    def start(self, child: Child) -> Child:
        self.children.append(child.start())
        return child

    @property
    def database_label(self) -> str:
        return "postgresql" if self.postgres else "sqlite"

    def make_database(self) -> str:
        given = os.environ.get("DATABASE_URL", "")
        if urlsplit(given).scheme not in {"postgres", "postgresql"}:
            return f"sqlite:///{self.tmp / 'bench.sqlite3'}"
        import psycopg

        name = f"parley_bench_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(given, autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
            backend = connection.execute("SELECT pg_backend_pid()").fetchone()[0]
            with contextlib.suppress(OSError), open(f"/proc/{backend}/stat") as f:
                self.postmaster_pid = int(f.read().rpartition(")")[2].split()[1])
        self.postgres = (given, name)
        return urlsplit(given)._replace(path=f"/{name}").geturl()

    def drop_database(self) -> None:
        if self.postgres is None:
            return
        import psycopg

        given, name = self.postgres
        try:
            with psycopg.connect(given, autocommit=True) as connection:
                connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except psycopg.Error as error:
            log(f"could not drop the database {name}: {error}")

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "DJANGO_SETTINGS_MODULE": "parley.settings",
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url,
            "PARLEY_KEY_PREFIX": self.prefix,
            "PARLEY_CELERY_QUEUE": self.prefix,
            "PARLEY_VAR_DIR": str(self.tmp),
            "OPENAI_BASE_URL": self.upstream_url,
            "OPENAI_API_KEY": "sk-bench",
            "PARLEY_DEMO_MODEL": "0",
            # One run per user already; the cap on a user's active runs must not be what refuses one.
            "PARLEY_MAX_ACTIVE_RUNS": str(max(3, self.args.runs)),
            "LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
        })
        return env

    # The measurement -------------------------------------------------------------------------------

    async def measure(self) -> None:
        a = self.args
        self.results["settings"] = {"runs": a.runs, "workers": a.workers, "concurrency": a.concurrency,
                                    "database": self.database_label, "steps_per_run": STEPS_PER_RUN, "model": self.model}
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=None))
        followers: list[Follower] = []
        try:
            followers = await self.connect(session)
            measured, warm = followers[:a.runs], followers[a.runs:]
            await self.warm_up(session, warm)
            # Ids are handed out in order: the measured runs come next. The margin covers ids a
            # refused start would take; a run outside the range is reported, not guessed.
            first = max(f.run_id for f in warm) + 1
            run_range = (first, first + a.runs + a.runs // 5 + 10)
            tap_out = self.tmp / "tap.json"
            tapper = self.start(Child("tap", [sys.executable, "-m", "bench.agents", "--tap", str(tap_out), "--tap-runs",
                                              "{}-{}".format(*run_range)], self.env(), self.tmp / "tap.log"))
            tapper.wait_for_line("tapping")
            profilers = self.profile() if a.profile else []
            await asyncio.sleep(0.5)

            log(f"{a.runs} runs at once over {a.workers} workers")
            before, t0 = self.cpu_sample(), time.monotonic_ns()
            await asyncio.gather(*(f.start(session, self.base_url, self.model) for f in measured))
            started, t_started = self.cpu_sample(), time.monotonic_ns()
            try:
                await asyncio.wait_for(asyncio.gather(*(f.finished.wait() for f in measured)), a.timeout)
            except TimeoutError:
                log(f"timed out after {a.timeout} s")
            after, t_end = self.cpu_sample(), time.monotonic_ns()
            for profiler in profilers:
                profiler.send_signal(signal.SIGINT)
            await asyncio.sleep(0.5)  # entries still in flight reach the tap
            tapper.stop()
            for profiler in profilers:
                profiler.wait(30)
            tapped = json.loads(tap_out.read_text())
            self.results["load_average_after"] = os.getloadavg()
            self.results["phase"] = self.analyze(measured, tapped, run_range, (t0, t_started, t_end), (before, started, after))
        finally:
            for f in followers:
                await f.ws.close()
            await session.close()

    async def connect(self, session: aiohttp.ClientSession) -> list[Follower]:
        """A socket per bench user, each with its reader, a few handshakes at a time."""
        url = f"{self.base_url.replace('http', 'ws', 1)}/ws/chat/"
        followers: list[Follower] = []
        for start in range(0, len(self.users), 20):
            users = self.users[start:start + 20]
            sockets = await asyncio.gather(*(session.ws_connect(url, headers=u.auth, max_msg_size=0) for u in users))
            followers += [Follower(u, ws) for u, ws in zip(users, sockets, strict=True)]
        for f in followers:
            f.reader = asyncio.create_task(f.read())
        return followers

    async def warm_up(self, session: aiohttp.ClientSession, warm: list[Follower]) -> None:
        """A run per worker first: imports, connections and caches, in daphne and in every worker."""
        log(f"warming up: {len(warm)} runs")
        await asyncio.gather(*(f.start(session, self.base_url, self.model) for f in warm))
        await asyncio.wait_for(asyncio.gather(*(f.finished.wait() for f in warm)), self.args.timeout)
        failed = [p for f in warm for p in f.problems] + [str(f.final) for f in warm if (f.final or {}).get("status") != "succeeded"]
        if failed:
            raise RuntimeError(f"warm-up runs failed: {failed[:3]}")

    def cpu_sample(self) -> dict[str, float]:
        sample = {
            "daphne": cpu_seconds(self.daphne.pid),
            "workers": sum(tree_cpu_seconds(w.pid) for w in self.workers),
            "upstream": cpu_seconds(self.upstream.pid),
            "tap": next((cpu_seconds(c.pid) for c in self.children if c.name == "tap"), 0.0),
            "client": cpu_seconds(os.getpid()),
            "machine": machine_busy_seconds(),
        }
        if self.redis_pid:
            sample["redis"] = cpu_seconds(self.redis_pid)
        if self.postmaster_pid:
            sample["postgres"] = tree_cpu_seconds(self.postmaster_pid)
        return sample

    def profile(self) -> list[subprocess.Popen]:
        """py-spy on daphne and on every worker (its task-running child included) until SIGINT."""
        out = Path(self.args.profile)
        out.mkdir(parents=True, exist_ok=True)
        spy = str(Path(sys.executable).parent / "py-spy")
        targets = [("daphne", self.daphne.pid, [])] + [(w.name, w.pid, ["--subprocesses"]) for w in self.workers]
        return [subprocess.Popen([spy, "record", "--pid", str(pid), *extra, "--rate", "100", "--nonblocking", "--format", "raw",
                                  "--output", str(out / f"{name}.txt")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                for name, pid, extra in targets]

    def analyze(self, measured: list[Follower], tapped: dict[str, Any], run_range: tuple[int, int],
                times: tuple[int, int, int], cpu: tuple[dict[str, float], ...]) -> dict[str, Any]:
        t0, t_started, t_end = times
        before, started, after = cpu
        appended: dict[int, dict[str, int]] = {}
        for run_id, cursor, ns in tapped["events"]:
            appended.setdefault(run_id, {}).setdefault(cursor, ns)
        latency: list[float] = []
        progress: list[float] = []
        steady: list[float] = []  # events appended once every start had been answered
        samples: list[tuple[int, str, str, float, float]] = []  # run, cursor, type, appended (ms after t0), latency
        lost = caught_up = untapped = steps = 0
        kinds: Counter[str] = Counter()
        steady_events = steady_progress = 0
        last_final = t0
        for f in measured:
            if not run_range[0] <= f.run_id <= run_range[1]:
                untapped += len(f.received)
                continue
            log_of_run = appended.get(f.run_id, {})
            lost += sum(1 for cursor in log_of_run if cursor not in f.received)
            for cursor, (ns, kind) in f.received.items():
                kinds[kind] += 1
                steps += kind == "step_finished"
                if kind == "run_finished":
                    last_final = max(last_final, ns)
                if t_started <= ns <= t_end:
                    steady_events += 1
                    steady_progress += kind == "progress"
                at = log_of_run.get(cursor)
                if at is None:
                    untapped += 1
                elif at < f.attach_sent_ns:
                    caught_up += 1  # appended before the client asked for the run: read back, not pushed
                else:
                    ms = (ns - at) / 1e6
                    latency.append(ms)
                    samples.append((f.run_id, cursor, kind, round((at - t0) / 1e6, 3), round(ms, 3)))
                    if kind == "progress":
                        progress.append(ms)
                    if at >= t_started:
                        steady.append(ms)
        delivered = sum(len(f.received) for f in measured)
        wall = (last_final - t0) / 1e9
        seconds = (t_end - t0) / 1e9 or 1e-9

        def used(name: str, lo: dict[str, float] = before) -> float:
            return after.get(name, 0.0) - lo.get(name, 0.0)

        lag = [us / 1000 for us in tapped["probe_lag_us"]]
        cpu_pct = {name: used(name) / seconds * 100 for name in after}
        # The machine's busy time less this benchmark's processes: other work sharing the cores.
        cpu_pct["others"] = cpu_pct["machine"] - sum(v for k, v in cpu_pct.items() if k != "machine")
        statuses = Counter((f.final or {}).get("status", "none") for f in measured)
        return {
            "runs": len(measured),
            "succeeded": statuses.get("succeeded", 0),
            "statuses": dict(statuses),
            "problems": [p for f in measured for p in f.problems][:5],
            "wall_s": wall,
            "steps": steps,
            "steps_per_s": steps / wall if wall else None,
            "events_delivered": delivered,
            "events_by_type": dict(kinds),
            "events_appended": sum(len(v) for k, v in appended.items() if k in {f.run_id for f in measured}),
            "lost": lost,
            "duplicated": sum(f.duplicates for f in measured),
            "untapped": untapped,
            "caught_up": caught_up,
            "notices": sum(f.notices for f in measured),
            "latency_ms": summary(latency),
            "progress_latency_ms": summary(progress),
            "steady_latency_ms": summary(steady),
            "tap_lag_ms": summary(lag),
            "cpu_s": {name: used(name) for name in after},
            "daphne_ms_per_event": used("daphne") * 1000 / delivered if delivered else None,
            "daphne_ms_per_progress_event": used("daphne") * 1000 / kinds["progress"] if kinds["progress"] else None,
            # After every start was answered: the events alone, without the starts and attaches.
            "daphne_steady_ms_per_event": used("daphne", started) * 1000 / steady_events if steady_events else None,
            "daphne_steady_ms_per_progress_event": used("daphne", started) * 1000 / steady_progress if steady_progress else None,
            "daphne_ms_per_start": (started["daphne"] - before["daphne"]) * 1000 / len(measured),
            "starts_s": (t_started - t0) / 1e9,
            "start_ms": summary([f.start_ms for f in measured if f.run_id]),
            "workers_ms_per_step": used("workers") * 1000 / steps if steps else None,
            "cpu_pct": cpu_pct,
            "phase_s": seconds,
            "samples": samples,
            # run, its POST (ms), then ms after t0: attach frame sent, first event appended and received, run_finished received
            "runs_timeline": [
                (f.run_id, round(f.start_ms, 1), round((f.attach_sent_ns - t0) / 1e6, 1),
                 round((min(appended.get(f.run_id, {}).values(), default=t0) - t0) / 1e6, 1),
                 round((min((ns for ns, _ in f.received.values()), default=t0) - t0) / 1e6, 1),
                 round((f.received.get((f.final or {}).get("cursor", ""), (t0, ""))[0] - t0) / 1e6, 1))
                for f in measured
            ],
        }

    # The end ---------------------------------------------------------------------------------------

    def cleanup(self) -> None:
        for child in reversed(self.children):
            child.stop()
        tracebacks = {c.name: c.log_path.read_text(errors="replace").count("Traceback") for c in self.children if c.log_path.exists()}
        self.results["errors_logged"] = {name: n for name, n in tracebacks.items() if n}
        if hasattr(self, "redis_url"):
            remove_redis_keys(self.redis_url, self.prefix)
        self.drop_database()
        if self.embedded is not None:
            self.embedded.stop()
        if self.args.keep:
            log(f"kept {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


def summary(values: list[float]) -> dict[str, float | int | None]:
    return {"n": len(values), "p50": pct(values, 50), "p90": pct(values, 90), "p99": pct(values, 99),
            "max": max(values) if values else None}


def quartet(s: dict[str, Any]) -> str:
    return " / ".join(fmt(s[key]) for key in ("p50", "p90", "p99", "max"))


def markdown(results: dict[str, Any]) -> str:
    p, s = results["phase"], results["settings"]
    cpu = p["cpu_pct"]
    lines = [
        "| database | runs × steps | workers | succeeded | wall (s) | steps/s | events | lost / dup | "
        "latency p50 / p90 / p99 / max (ms) | progress events p50 / p90 / p99 / max (ms) |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| {s['database']} | {p['runs']} × {s['steps_per_run']} | {s['workers']} | {p['succeeded']} | {fmt(p['wall_s'])} | "
        f"{fmt(p['steps_per_s'])} | {p['events_delivered']} | {p['lost']} / {p['duplicated']} | {quartet(p['latency_ms'])} | "
        f"{quartet(p['progress_latency_ms'])} |",
        "",
        "| daphne CPU per event (ms) | per progress event (ms) | after the starts: per event / per progress event (ms) | "
        "per start (ms) | workers' CPU per step (ms) | CPU: daphne / workers / redis / postgres / upstream / tap / client / others (machine) |",
        "|---|---|---|---|---|---|",
        f"| {fmt(p['daphne_ms_per_event'], 2)} | {fmt(p['daphne_ms_per_progress_event'], 2)} | "
        f"{fmt(p['daphne_steady_ms_per_event'], 2)} / {fmt(p['daphne_steady_ms_per_progress_event'], 2)} | "
        f"{fmt(p['daphne_ms_per_start'], 2)} | {fmt(p['workers_ms_per_step'], 1)} | "
        + " / ".join(f"{fmt(cpu.get(name), 0)}%" for name in ("daphne", "workers", "redis", "postgres", "upstream", "tap", "client", "others"))
        + f" ({fmt(cpu['machine'], 0)}%) |",
        "",
        f"Tap lag (probe append to tap) p50 / p90 / p99 / max: {quartet(p['tap_lag_ms'])} ms over {p['tap_lag_ms']['n']} probes. "
        f"{p['caught_up']} events were appended before their client attached (read back, not timed); "
        f"{p['untapped']} received events were not seen by the tap; {p['notices']} run notices. "
        f"Starting the runs took {fmt(p['starts_s'], 2)} s (a start's POST p50 / p90 / p99 / max: {quartet(p['start_ms'])} ms); "
        f"events appended after that: latency p50 / p90 / p99 / max {quartet(p['steady_latency_ms'])} ms. "
        f"Events by type: {p['events_by_type']}.",
    ]
    if p["problems"]:
        lines.append(f"Problems: {p['problems']}")
    if results.get("errors_logged"):
        lines.append(f"Tracebacks logged: {results['errors_logged']}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=100, help="runs started at once")
    parser.add_argument("--workers", type=int, default=2, help="Celery worker processes")
    parser.add_argument("--concurrency", type=int, default=1, help="--concurrency of each worker")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for every run to finish")
    parser.add_argument("--profile", default="", help="py-spy profiles (collapsed stacks) of daphne and the workers into this dir")
    parser.add_argument("--out", default="", help="write the results as JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (database, logs)")
    parser.add_argument("--tap", default="", help=argparse.SUPPRESS)  # the tap process: its output file
    parser.add_argument("--tap-runs", default="", help=argparse.SUPPRESS)  # FIRST-LAST run ids it reads
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.tap:
        first, _, last = args.tap_runs.partition("-")
        tap(Path(args.tap), int(first), int(last))
        return
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    bench = AgentBench(args)
    try:
        bench.prepare()
        asyncio.run(bench.measure())
    finally:
        bench.cleanup()
    if args.out:
        Path(args.out).write_text(json.dumps(bench.results, indent=2, default=str))
    if "phase" in bench.results:
        print(markdown(bench.results))


if __name__ == "__main__":
    main()
