"""Scaling out: N concurrent streams over one and two web processes, and what each stream costs.

    .venv/bin/python -m bench.scale --streams 50,200 --webs 1,2
    .venv/bin/python -m bench.scale --find-max --webs 1,2 --out var/scale.json
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench_scale .venv/bin/python -m bench.scale --find-max

What it starts (docs/benchmarks.md, "Scaling out", explains each number): Redis (REDIS_URL, else
an embedded one), a fresh database (a SQLite file in a temp dir, or, when DATABASE_URL names a
PostgreSQL server, the database it names, created here and dropped at the end), the fake upstream
(bench/upstream.py: 200 tokens at 50 tokens/s, each token stamped with its send time), as many web
processes as the largest of --webs (`python -m parley.serve`, daphne on uvloop) and one Celery
worker. Then per N: N streams read from the upstream directly (the baseline for "TTFT added"),
then for each web count W and transport, N streams through Parley, stream i on web process i mod W
(each stream's requests and socket stay on its process, as behind a sticky balancer). The load
shape is bench/load.py's: streams spread over one reply's duration, one warm-up reply, --rounds
measured replies, then more until every stream has finished its measured ones.

Measured per phase, beside load.py's latency numbers: tokens/s delivered against asked, CPU-s per
1,000 tokens of each web process, Redis operations per token (INFO commandstats), Redis memory per
stream (MEMORY USAGE of the running replies' logs mid-phase, and used_memory's growth over N),
database writes per reply (PostgreSQL: pg_stat_database and pg_stat_user_tables; SQLite: row
triggers, no transaction count), and whether the latency targets were met. --find-max steps N up
per web count until a step misses them. The results print as Markdown tables, with the sizing
inputs for bench/sizing.py (--out writes every number as JSON).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from bench import sizing
from bench.gateway_proc import tree_cpu_seconds
from bench.load import (Bench, Child, cpu_seconds, fmt, log, machine_busy_seconds, machine_facts, pct,
                        redis_server_pid, remove_redis_keys)

FIND_MAX_STEPS = "50,100,200,300,400"
# Targets at load, docs/benchmarks.md "Targets" (200 streams): p99 of TTFT added and of relay delay.
TTFT_TARGET_MS = 250.0
RELAY_TARGET_MS = 150.0
# PostgreSQL backends send their statistics at most once a second while busy and within 10 s once
# idle (PostgreSQL 15): counters are read after this quiet time, so each phase's writes are whole.
PG_STATS_SETTLE_S = 11.0
# The benchmark's own commands to Redis (its memory sampling and INFO): not counted as Parley's.
OWN_COMMANDS = {"info", "memory", "scan", "ttl"}
EVENT_LOG = re.compile(rb":msg:\d+:events(?::\{s\d+\})?$")  # with its stream tag (streaming/keys.py)
STREAM_TTL = int(os.environ.get("PARLEY_STREAM_TTL", 3600))
FINISHED_SAMPLE = 200


def key_kind(key: bytes, prefix: str) -> str:
    """A key with its ids replaced by <n>, so keys group by kind."""
    kind = re.sub(r"\d+", "<n>", key.decode(errors="replace").removeprefix(prefix))
    return kind or "(the Celery queue)"  # PARLEY_CELERY_QUEUE is the prefix itself


class Counter:
    """Tokens delivered by one web process (or the upstream): load.py's clients, counting apart."""

    ws_reply = Bench.ws_reply
    sse_reply = Bench.sse_reply
    direct_reply = Bench.direct_reply

    def __init__(self, args: argparse.Namespace, upstream_url: str = "") -> None:
        self.args = args
        self.upstream_url = upstream_url
        self.tokens_received = 0


@dataclass
class Web:
    child: Child
    base: str

    @property
    def pid(self) -> int:
        return self.child.pid


@dataclass
class Database:
    """The benchmark's database: a SQLite file, or a PostgreSQL database created for the run."""

    url: str
    postgres_server: str = ""  # the server's URL with the maintenance database, when PostgreSQL
    name: str = ""
    postmaster_pid: int | None = None
    counted: list[str] = field(default_factory=list)

    @property
    def is_postgres(self) -> bool:
        return bool(self.postgres_server)

    @classmethod
    def make(cls, given: str, sqlite_path: Path) -> Database:
        if urlsplit(given).scheme not in {"postgres", "postgresql"}:
            return cls(url=f"sqlite:///{sqlite_path}")
        import psycopg

        parts = urlsplit(given)
        name = parts.path.lstrip("/")
        if not name or not re.fullmatch(r"[A-Za-z0-9_]+", name):
            raise SystemExit(f"DATABASE_URL must name the benchmark's own database (letters, digits, _), got {name!r}")
        server = parts._replace(path="/postgres").geturl()
        with psycopg.connect(server, autocommit=True) as db:
            exists = db.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
            if exists and "bench" not in name:
                raise SystemExit(f"the database {name!r} exists: scale.py makes its own and drops it at the end; name "
                                 "one that does not exist, or one with 'bench' in its name to have it made again")
            if exists:
                log(f"dropping the database {name} left by an earlier run")
                db.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            db.execute(f'CREATE DATABASE "{name}"')
            backend = db.execute("SELECT pg_backend_pid()").fetchone()[0]
            postmaster = None
            with contextlib.suppress(OSError), open(f"/proc/{backend}/stat") as f:
                postmaster = int(f.read().rpartition(")")[2].split()[1])
        return cls(url=given, postgres_server=server, name=name, postmaster_pid=postmaster)

    def count_sqlite_writes(self) -> None:
        """Row triggers on every ordinary table (setup_db counts three; here all, deletes too)."""
        path = self.url.removeprefix("sqlite:///")
        with contextlib.closing(sqlite3.connect(path, timeout=30)) as db:
            tables = [row[1] for row in db.execute("PRAGMA table_list") if row[2] == "table" and row[0] == "main"
                      and not row[1].startswith("sqlite_") and row[1] != "bench_writes"]
            for table in tables:
                for kind in ("insert", "update", "delete"):
                    name = f"{table}_{kind}"
                    db.execute("INSERT OR IGNORE INTO bench_writes (name, n) VALUES (?, 0)", [name])
                    db.execute(f'CREATE TRIGGER IF NOT EXISTS "bench_{name}" AFTER {kind.upper()} ON "{table}" '
                               f"BEGIN UPDATE bench_writes SET n = n + 1 WHERE name = '{name}'; END")
            db.commit()
        self.counted = tables

    def counters(self) -> dict[str, int]:
        """Cumulative write counters: `rows`, per-table `<table>_<kind>`, and on PostgreSQL `transactions`."""
        if not self.is_postgres:
            path = self.url.removeprefix("sqlite:///")
            with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)) as db:
                found = {name: n for name, n in db.execute("SELECT name, n FROM bench_writes")}
            found["rows"] = sum(found.values())
            return found
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as db:
            commits, rollbacks, ins, upd, dele = db.execute(
                "SELECT xact_commit, xact_rollback, tup_inserted, tup_updated, tup_deleted FROM pg_stat_database "
                "WHERE datname = current_database()").fetchone()
            found = {"transactions": commits, "rollbacks": rollbacks, "rows": ins + upd + dele}
            for table, t_ins, t_upd, t_del in db.execute(
                    "SELECT relname, n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_user_tables"):
                found.update({f"{table}_insert": t_ins, f"{table}_update": t_upd, f"{table}_delete": t_del})
        return found

    def cpu_seconds(self) -> float:
        """The PostgreSQL server's CPU (all its processes: other databases' work on it too)."""
        return tree_cpu_seconds(self.postmaster_pid) if self.postmaster_pid else 0.0

    def drop(self) -> None:
        if not self.is_postgres:
            return
        import psycopg

        try:
            with psycopg.connect(self.postgres_server, autocommit=True) as db:
                db.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        except psycopg.Error as error:
            log(f"could not drop the database {self.name}: {error}")


class ScaleBench(Bench):
    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self.webs: list[Web] = []
        self.embedded: Any = None
        self.db: Database | None = None
        self.results = {"phases": [], "find_max": {}}
        self.missed: set[tuple[int, str]] = set()  # (web processes, transport) that missed the targets

    # Setup ---------------------------------------------------------------------------------------

    def env(self, **extra: str) -> dict[str, str]:
        env = super().env(**extra)
        assert self.db is not None
        env.update({"DATABASE_URL": self.db.url, "REDIS_URL": self.redis_url})
        if self.args.max_generations:
            env["PARLEY_MAX_GENERATIONS"] = str(self.args.max_generations)
        env.update(extra)
        return env

    def prepare(self) -> None:
        a = self.args
        self.results["machine"] = machine_facts()
        self.redis_url = os.environ.get("REDIS_URL", "")
        if not self.redis_url:
            from parley import embedded_redis

            self.embedded = embedded_redis.start()
            self.redis_url = self.embedded.url
        self._redis_pid = redis_server_pid(self.redis_url)
        if self.embedded is not None and self._redis_pid:
            self.prioritize(self._redis_pid)
        self.db = Database.make(os.environ.get("DATABASE_URL", ""), self.tmp / "bench.sqlite3")
        self.start_upstream()
        phases = len(a.streams) * len(a.webs) * len(a.transports)
        self.setup_database(max(max(a.streams), 4), phases + 12)
        if not self.db.is_postgres:
            self.db.count_sqlite_writes()
        for index in range(max(a.webs)):
            child, base = self.start_daphne(f"web{index}")
            self.webs.append(Web(child, base))
        env = self.env()
        worker = Child("worker", [sys.executable, "-m", "celery", "-A", "parley", "worker", "-l", "warning", "--concurrency",
                                  "1", "-Q", self.prefix, "-n", f"worker-{self.prefix}@%h", "--without-gossip",
                                  "--without-mingle", "--without-heartbeat"], env, self.tmp / "worker.log").start()
        self.children.append(worker)
        self.prioritize(worker.pid)
        self.worker = worker
        self.results["setup"] = {"database": "postgresql" if self.db.is_postgres else "sqlite",
                                 "redis": "embedded" if self.embedded else self.redis_url,
                                 "redis_version": self.redis().info("server").get("redis_version")}
        log(f"{len(self.webs)} web processes, a worker (pid {worker.pid}), {self.results['setup']}")

    def redis(self) -> Any:
        import redis

        if not hasattr(self, "_redis"):
            self._redis = redis.Redis.from_url(self.redis_url)
        return self._redis

    # Measuring -------------------------------------------------------------------------------------

    def commandstats(self) -> dict[str, int]:
        stats = self.redis().info("commandstats")
        return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}

    def redis_keys(self) -> dict[str, Any]:
        """MEMORY USAGE of the keys under the prefix, by kind; the running replies' logs apart.

        A running reply's log expires in a day and a finished one's in PARLEY_STREAM_TTL
        (streaming/eventlog.py), so the TTL tells them apart. Every running log and every other
        key is measured, and up to FINISHED_SAMPLE finished logs (the earlier phases' are kept
        too), in small pipelines, so that Redis never stalls the streams for long."""
        client = self.redis()
        keys = list(client.scan_iter(f"{self.prefix}*", count=1000))
        ttls = self.pipelined(client, [("ttl", key) for key in keys])
        finished = [key for key, ttl in zip(keys, ttls, strict=True) if EVENT_LOG.search(key) and ttl <= STREAM_TTL]
        finished_set = set(finished)
        step = max(1, len(finished) // FINISHED_SAMPLE)
        measured = [key for key in keys if key not in finished_set] + finished[::step]
        sizes = dict(zip(measured, self.pipelined(client, [("memory_usage", key) for key in measured]), strict=True))
        running = [sizes[key] or 0 for key in measured if key not in finished_set and EVENT_LOG.search(key)]
        sampled = [sizes[key] or 0 for key in finished[::step]]
        finished_mean = sum(sampled) / len(sampled) if sampled else None
        kinds: dict[str, dict[str, float]] = {}
        for key in keys:
            kind = kinds.setdefault(key_kind(key, self.prefix), {"keys": 0, "bytes": 0})
            kind["keys"] += 1
            kind["bytes"] += (sizes[key] or 0) if key in sizes else (finished_mean or 0)  # an unsampled finished log: the mean
        return {"kinds": kinds, "running_logs": len(running), "running_log_bytes_mean": sum(running) / len(running) if running else None,
                "finished_logs": len(finished), "finished_log_bytes_mean": finished_mean, "finished_logs_sampled": len(sampled),
                "used_memory": int(client.info("memory")["used_memory"])}

    @staticmethod
    def pipelined(client: Any, calls: list[tuple[str, bytes]], size: int = 200) -> list[Any]:
        answers: list[Any] = []
        for start in range(0, len(calls), size):
            pipe = client.pipeline(transaction=False)
            for method, key in calls[start:start + size]:
                if method == "memory_usage":
                    pipe.memory_usage(key, samples=0)
                else:
                    pipe.ttl(key)
            answers.extend(pipe.execute())
        return answers

    def settle_and_count(self) -> dict[str, int]:
        assert self.db is not None
        if self.db.is_postgres:
            time.sleep(PG_STATS_SETTLE_S)
        return self.db.counters()

    async def run_phase(self, transport: str, n: int, webs: list[Web] | None = None) -> dict[str, Any]:  # type: ignore[override]
        """N streams over `webs` (round robin), or read from the upstream directly when None."""
        a = self.args
        reply_seconds = a.tokens / a.rate if a.rate else 1.0
        counters = [Counter(a, self.upstream_url) for _ in (webs or [None])]
        measured: list[Any] = []
        failures: list[str] = []
        connect_failures: list[str] = []
        state = {"replies": 0, "started": 0, "done": 0}
        all_measured = asyncio.Event()
        marks: dict[str, Any] = {}
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=None))
        deadline = time.monotonic() + reply_seconds * (a.rounds + 4) + 60
        db_before = self.db_count if webs else {}
        used_before = int(self.redis().info("memory")["used_memory"]) if webs else 0

        def tokens_now() -> int:
            return sum(c.tokens_received for c in counters)

        pids = {"upstream": self.upstream.pid, "driver": os.getpid()}
        pids.update({f"web{i}": web.pid for i, web in enumerate(self.webs)})
        if self.redis_pid:
            pids["redis"] = self.redis_pid

        def snapshot(name: str) -> None:
            """Counters at a moment: the steady window runs from the last stream's start to the
            moment every stream has finished its measured replies ("start"/"end" if it never formed)."""
            cpu = {who: cpu_seconds(pid) for who, pid in pids.items()}
            cpu.update({"machine": machine_busy_seconds(), "worker": tree_cpu_seconds(self.worker.pid),
                        "postgres": self.db.cpu_seconds()})
            marks[name] = {"ns": time.time_ns(), "tokens": tokens_now(), "per_web": [c.tokens_received for c in counters],
                           "cpu": cpu}
            if webs:
                marks[name]["commands"] = self.commandstats()

        async def sample_memory() -> None:
            await asyncio.sleep(reply_seconds * a.rounds / 2)
            if not all_measured.is_set():
                marks["redis_keys"] = await asyncio.to_thread(self.redis_keys)

        def slot_done() -> None:
            state["done"] += 1
            if state["done"] == n:
                snapshot("steady_to")
                all_measured.set()

        async def slot(index: int) -> None:
            round_ = 0
            user = self.users[index]
            conversation = user.next_conversation()  # one conversation per stream: its replies are turns in it
            web = webs[index % len(webs)] if webs else None
            # --sse-attach next: the GET of the events goes to the next process, as behind a balancer
            # without affinity; that process follows the reply through Redis (streaming/remote.py).
            attach = webs[(index + (a.sse_attach == "next")) % len(webs)] if webs else None
            counter = counters[(index + (a.sse_attach == "next" and transport == "sse")) % len(counters)]
            await asyncio.sleep(index * reply_seconds / n)
            ws = None
            try:
                if transport == "ws" and web:
                    ws = await self.ws_connect(session, web.base, user, connect_failures)
                while (round_ <= a.rounds or not all_measured.is_set()) and time.monotonic() < deadline:
                    if round_ == 0:
                        state["started"] += 1
                        if state["started"] == n:
                            snapshot("steady_from")
                            if webs:
                                tasks.append(asyncio.create_task(sample_memory()))
                    if web is None:
                        reply = await counter.direct_reply(session)
                    elif transport == "ws":
                        reply = await counter.ws_reply(ws, conversation)
                    else:
                        reply = await counter.sse_reply(session, web.base, user, conversation, attach.base)
                    state["replies"] += 1
                    if reply.problem:
                        failures.append(reply.problem)
                        await asyncio.sleep(1.0)  # a refused send (busy) is not retried in a tight loop
                    if 1 <= round_ <= a.rounds:
                        measured.append(reply)
                    round_ += 1
                    if round_ == a.rounds + 1:
                        slot_done()
            finally:
                if round_ <= a.rounds:  # a crashed slot must not hold up the end of the phase
                    slot_done()
                if ws is not None:
                    await ws.close()

        tasks: list[asyncio.Task[None]] = []
        snapshot("start")
        try:
            results = await asyncio.gather(*(slot(i) for i in range(n)), return_exceptions=True)
        finally:
            await session.close()
        for task in tasks:
            await task
        snapshot("end")
        for result in results:
            if isinstance(result, BaseException):
                failures.append(f"slot crashed: {type(result).__name__}: {result}")
        if "steady_from" not in marks or "steady_to" not in marks:
            marks["steady_from"], marks["steady_to"] = marks["start"], marks["end"]
        first, last = marks["steady_from"], marks["steady_to"]
        started, ended = marks["start"]["ns"], marks["end"]["ns"]
        seconds = (last["ns"] - first["ns"]) / 1e9 or 1e-9
        tokens = last["tokens"] - first["tokens"]
        relay = [us / 1000 for r in measured for us in r.relay_us]
        ttft = [r.ttft_ms for r in measured if r.ttft_ms is not None]
        phase: dict[str, Any] = {
            "transport": transport if webs else "direct", "streams": n, "webs": len(webs or []),
            "replies_measured": len(measured), "replies_total": state["replies"],
            "failures": len(failures), "failure_examples": failures[:5],
            "connect_failures": len(connect_failures), "connect_failure_examples": connect_failures[:2],
            "ttft_ms_p50": pct(ttft, 50), "ttft_ms_p99": pct(ttft, 99),
            "relay_ms_p50": pct(relay, 50), "relay_ms_p99": pct(relay, 99), "relay_ms_max": max(relay, default=None),
            # Over the replies that ended with `done`: one refused or ended by an error is a failed reply.
            "lost": sum(r.lost for r in measured if (r.final or {}).get("type") == "done"),
            "duplicated": sum(r.duplicated for r in measured if r.final is not None),
            "window_s": seconds, "window_tokens": tokens,
            "tokens_per_s": tokens / seconds, "tokens_per_s_asked": n * a.rate,
            "duration_s": (ended - started) / 1e9,
            "cpu_pct": {name: (last["cpu"][name] - value) / seconds * 100 for name, value in first["cpu"].items()},
        }
        phase["cpu_pct"]["others"] = phase["cpu_pct"]["machine"] - sum(
            v for k, v in phase["cpu_pct"].items() if k != "machine" and (k != "postgres" or self.db.is_postgres))
        if webs:
            self.web_figures(phase, webs, marks)
            self.redis_figures(phase, marks, used_before, n)
            self.db_count = self.settle_and_count()
            self.db_figures(phase, db_before, self.db_count)
        return phase

    def web_figures(self, phase: dict[str, Any], webs: list[Web], marks: dict[str, Any]) -> None:
        lo, hi = marks["steady_from"], marks["steady_to"]
        per_web_tokens = [b - a for a, b in zip(lo["per_web"], hi["per_web"], strict=True)]
        spent = [hi["cpu"][f"web{i}"] - lo["cpu"][f"web{i}"] for i in range(len(webs))]
        phase["web_cpu_s_per_1k_tokens"] = [cpu / t * 1000 if t else None for cpu, t in zip(spent, per_web_tokens, strict=True)]
        total_cpu = sum(spent)
        phase["cpu_s_per_1k_tokens"] = total_cpu / phase["window_tokens"] * 1000 if phase["window_tokens"] else None
        phase["web_cpu_pct"] = [phase["cpu_pct"][f"web{i}"] for i in range(len(webs))]

    def redis_figures(self, phase: dict[str, Any], marks: dict[str, Any], used_before: int, n: int) -> None:
        lo, hi = marks["steady_from"], marks["steady_to"]
        if "commands" in lo and "commands" in hi:
            calls = {k: v - lo["commands"].get(k, 0) for k, v in hi["commands"].items() if k not in OWN_COMMANDS}
            calls = {k: v for k, v in calls.items() if v}
            tokens = hi["tokens"] - lo["tokens"]
            ops = sum(calls.values())
            phase["redis_commands"] = dict(sorted(calls.items(), key=lambda kv: -kv[1]))
            phase["redis_ops_per_token"] = ops / tokens if tokens else None
            phase["redis_ops_per_s"] = ops / ((hi["ns"] - lo["ns"]) / 1e9 or 1e-9)
            redis_cpu = phase["cpu_pct"].get("redis")
            phase["redis_cpu_us_per_op"] = (redis_cpu / 100 * 1e6 / phase["redis_ops_per_s"]
                                            if redis_cpu is not None and phase["redis_ops_per_s"] else None)
        keys = marks.get("redis_keys")
        if keys:
            phase["redis_keys"] = keys
            phase["redis_bytes_per_running_stream"] = keys["running_log_bytes_mean"]
            phase["redis_bytes_per_finished_reply"] = keys["finished_log_bytes_mean"]
            phase["redis_used_memory_growth_per_stream"] = (keys["used_memory"] - used_before) / n

    def db_figures(self, phase: dict[str, Any], before: dict[str, int], after: dict[str, int]) -> None:
        replies = phase["replies_total"] or 1
        delta = {k: v - before.get(k, 0) for k, v in after.items()}
        phase["db_rows_per_reply"] = delta.get("rows", 0) / replies
        phase["db_transactions_per_reply"] = delta["transactions"] / replies if "transactions" in delta else None
        phase["db_writes_by_table_per_reply"] = {k: v / replies for k, v in sorted(delta.items())
                                                 if v and k not in {"rows", "transactions", "rollbacks"}}

    def targets(self, phase: dict[str, Any], direct: dict[str, Any]) -> dict[str, Any]:
        a = self.args
        ttft_added = None if phase["ttft_ms_p99"] is None else phase["ttft_ms_p99"] - direct["ttft_ms_p99"]
        checks = {
            "ttft_added_p99": ttft_added is not None and ttft_added <= a.ttft_target_ms,
            "relay_p99": phase["relay_ms_p99"] is not None and phase["relay_ms_p99"] <= a.relay_target_ms,
            "nothing_lost": phase["lost"] == 0 and phase["duplicated"] == 0,
            "no_failed_reply": phase["failures"] == 0,
        }
        return {"met": all(checks.values()), "checks": checks, "ttft_added_ms_p50": None if phase["ttft_ms_p50"] is None
                else phase["ttft_ms_p50"] - direct["ttft_ms_p50"], "ttft_added_ms_p99": ttft_added}

    # The run ---------------------------------------------------------------------------------------

    async def warm_up_all(self) -> None:
        for web in self.webs:
            self.base_url = web.base
            await self.warm_up()
        self.db_count = self.settle_and_count()

    async def run(self) -> None:  # type: ignore[override]
        a = self.args
        self.results["command"] = " ".join(["python -m bench.scale", *sys.argv[1:]])
        self.results["settings"] = {k: getattr(a, k) for k in ("streams", "webs", "transports", "tokens", "rate", "rounds",
                                                                "ttft_target_ms", "relay_target_ms", "find_max", "max_generations", "nice", "sse_attach")}
        log("warming up")
        await self.warm_up_all()
        for n in a.streams:
            todo = [(w, t) for w in a.webs for t in a.transports if (w, t) not in self.missed]
            if not todo:
                break
            log(f"phase: direct x {n}")
            direct = await self.run_phase("direct", n)
            self.results["phases"].append(direct)
            await asyncio.sleep(2.0)
            for w, transport in todo:
                log(f"phase: {transport} x {n} over {w} web process{'es' if w > 1 else ''}")
                phase = await self.run_phase(transport, n, self.webs[:w])
                phase["targets"] = self.targets(phase, direct)
                self.results["phases"].append(phase)
                log(summary_line(phase))
                if a.find_max and not phase["targets"]["met"]:
                    self.missed.add((w, transport))
                await asyncio.sleep(2.0)
        self.results["find_max"] = find_max(self.results["phases"], a.webs, a.transports)
        self.results["sizing_inputs"] = sizing_inputs(self.results, a)
        self.results["load_average_after"] = os.getloadavg()

    def server_errors(self) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for child in self.children:
            if not child.log_path.exists():
                continue
            lines = child.log_path.read_text(errors="replace").splitlines()
            starts = [i for i, line in enumerate(lines) if (" ERROR " in line or "Traceback" in line)
                      and "Service Unavailable" not in line]
            if starts:
                found[child.name] = {"errors": len(starts), "first": "\n".join(lines[starts[0]:starts[0] + 40])}
        return found

    def cleanup(self) -> None:
        worker = getattr(self, "worker", None)
        if worker is not None and worker.process is not None and worker.process.poll() is None:
            # A warm shutdown: SIGTERM to the worker alone lets it finish its task and stop its pool
            # child itself (Child.stop signals the whole group, which the worker logs as a lost child).
            worker.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.process.wait(30)
        for child in reversed(self.children):
            child.stop()
        self.results["server_errors"] = self.server_errors()
        if getattr(self, "redis_url", ""):
            remove_redis_keys(self.redis_url, self.prefix)
        if self.db is not None and not self.args.keep:
            self.db.drop()
        if self.embedded is not None:
            self.embedded.stop()
        if self.args.keep:
            log(f"kept {self.tmp}" + (f" and the database {self.db.name}" if self.db and self.db.is_postgres else ""))
        else:
            import shutil

            shutil.rmtree(self.tmp, ignore_errors=True)


# Results -----------------------------------------------------------------------------------------


def find_max(phases: list[dict[str, Any]], webs: list[int], transports: list[str]) -> dict[str, Any]:
    """Per web count and transport: the largest N that met the targets, every smaller step having met them."""
    found: dict[str, Any] = {}
    for w in webs:
        for transport in transports:
            steps = sorted((p for p in phases if p["webs"] == w and p["transport"] == transport), key=lambda p: p["streams"])
            best = None
            for p in steps:
                if not p["targets"]["met"]:
                    break
                best = p
            found[f"{w}/{transport}"] = {
                "webs": w, "transport": transport, "largest_streams": best["streams"] if best else None,
                "tokens_per_s": best["tokens_per_s"] if best else None,
                "web_cpu_s_per_1k_tokens": best.get("web_cpu_s_per_1k_tokens") if best else None,
                "first_miss": next((p["streams"] for p in steps if not p["targets"]["met"]), None),
            }
    return found


def sizing_inputs(results: dict[str, Any], args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """bench/sizing.py's inputs per web count: from the largest phase that met the targets
    (WebSocket first), streams per core = its N over its web processes."""
    inputs: dict[str, dict[str, Any]] = {}
    for w in args.webs:
        for transport in args.transports:
            best = results["find_max"].get(f"{w}/{transport}", {})
            phase = next((p for p in results["phases"] if p["webs"] == w and p["transport"] == transport
                          and p["streams"] == best.get("largest_streams")), None)
            if phase is None or str(w) in inputs or phase.get("redis_ops_per_token") is None:
                continue
            inputs[str(w)] = {
                "streams_per_core": phase["streams"] / w,
                "redis_ops_per_token": phase["redis_ops_per_token"],
                "redis_bytes_per_stream": phase.get("redis_bytes_per_running_stream") or 0.0,
                "redis_bytes_per_finished_reply": phase.get("redis_bytes_per_finished_reply") or 0.0,
                "db_writes_per_reply": phase["db_rows_per_reply"],
                "db_transactions_per_reply": phase["db_transactions_per_reply"],
                "redis_cpu_us_per_op": phase.get("redis_cpu_us_per_op"),
                "tokens_per_second": args.rate,
                "tokens_per_reply": args.tokens,
                "stream_ttl_seconds": float(STREAM_TTL),
            }
    return inputs


def summary_line(p: dict[str, Any]) -> str:
    t = p.get("targets", {})
    return (f"{p['transport']:>6} N={p['streams']:<4} webs={p['webs']} TTFT added p99 {fmt(t.get('ttft_added_ms_p99'))} ms  "
            f"relay p99 {fmt(p['relay_ms_p99'])} ms  {fmt(p['tokens_per_s'], 0)}/{fmt(p['tokens_per_s_asked'], 0)} tokens/s  "
            f"cpu/1k {' · '.join(fmt(v, 3) for v in p.get('web_cpu_s_per_1k_tokens', []))}  "
            f"redis ops/token {fmt(p.get('redis_ops_per_token'), 3)}  rows/reply {fmt(p.get('db_rows_per_reply'), 2)}  "
            f"lost {p['lost']} dup {p['duplicated']} failed {p['failures']}  targets {'met' if t.get('met') else 'MISSED'}")


def markdown(results: dict[str, Any]) -> str:
    phases = [p for p in results["phases"] if p["webs"]]
    direct = {p["streams"]: p for p in results["phases"] if not p["webs"]}
    out = ["| web processes | N | transport | TTFT added p50 / p99 (ms) | relay p50 / p99 (ms) | tokens/s delivered / asked | "
           "CPU-s per 1k tokens, per web process | web CPU | Redis ops / token | Redis bytes per stream: running log / "
           "used_memory growth | DB transactions / row writes per reply | lost / dup | failed | targets |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in phases:
        t = p["targets"]
        xacts = fmt(p["db_transactions_per_reply"], 1) if p["db_transactions_per_reply"] is not None else "–"
        out.append(
            f"| {p['webs']} | {p['streams']} | {p['transport']} | {fmt(t['ttft_added_ms_p50'])} / {fmt(t['ttft_added_ms_p99'])} | "
            f"{fmt(p['relay_ms_p50'])} / {fmt(p['relay_ms_p99'])} | {fmt(p['tokens_per_s'], 0)} / {fmt(p['tokens_per_s_asked'], 0)} | "
            f"{' · '.join(fmt(v, 3) for v in p['web_cpu_s_per_1k_tokens'])} | {' · '.join(fmt(v, 0) + '%' for v in p['web_cpu_pct'])} | "
            f"{fmt(p.get('redis_ops_per_token'), 3)} | {fmt(p.get('redis_bytes_per_running_stream'), 0)} / "
            f"{fmt(p.get('redis_used_memory_growth_per_stream'), 0)} | {xacts} / {fmt(p['db_rows_per_reply'], 1)} | "
            f"{p['lost']} / {p['duplicated']} | {p['failures']} of {p['replies_total']} | {'met' if t['met'] else 'missed: ' + ', '.join(k for k, ok in t['checks'].items() if not ok)} |")
    out += ["", "| N | direct TTFT p50 / p99 (ms) | direct relay p50 / p99 (ms) | tokens/s | upstream CPU |", "|---|---|---|---|---|"]
    for n, p in direct.items():
        out.append(f"| {n} | {fmt(p['ttft_ms_p50'])} / {fmt(p['ttft_ms_p99'])} | {fmt(p['relay_ms_p50'])} / {fmt(p['relay_ms_p99'])} | "
                   f"{fmt(p['tokens_per_s'], 0)} | {fmt(p['cpu_pct']['upstream'], 0)}% |")
    out += ["", "| web processes | N | transport | CPU: web processes / worker / Redis / PostgreSQL / upstream / driver / others | "
            "Redis ops/s | Redis CPU per op (µs) | finished logs kept: count, mean bytes |", "|---|---|---|---|---|---|---|"]
    for p in phases:
        c = p["cpu_pct"]
        keys = p.get("redis_keys") or {}
        pg = fmt(c.get("postgres"), 0) + "%" if results.get("setup", {}).get("database") == "postgresql" else "–"
        out.append(f"| {p['webs']} | {p['streams']} | {p['transport']} | {fmt(sum(p['web_cpu_pct']), 0)}% / {fmt(c.get('worker'), 0)}% / "
                   f"{fmt(c.get('redis'), 0)}% / {pg} / {fmt(c.get('upstream'), 0)}% / {fmt(c.get('driver'), 0)}% / "
                   f"{fmt(c.get('others'), 0)}% | {fmt(p.get('redis_ops_per_s'), 0)} | {fmt(p.get('redis_cpu_us_per_op'), 1)} | "
                   f"{keys.get('finished_logs', '–')}, {fmt(keys.get('finished_log_bytes_mean'), 0)} |")
    if phases:
        last = max(phases, key=lambda p: (p["streams"], p["webs"]))
        out += ["", f"Database writes per reply, N={last['streams']} over {last['webs']} web process(es), {last['transport']}: "
                + (", ".join(f"{k} {v:.2f}" for k, v in last["db_writes_by_table_per_reply"].items()) or "none")]
        cmds = last.get("redis_commands") or {}
        tokens = last["window_tokens"] or 1
        out.append("Redis commands per 1,000 tokens there: " + (", ".join(f"{k} {v / tokens * 1000:.1f}" for k, v in list(cmds.items())[:12]) or "–"))
        kinds = (last.get("redis_keys") or {}).get("kinds", {})
        if kinds:
            out.append("Redis keys mid-phase there: " + ", ".join(f"`{k}` {v['keys']} ({v['bytes']:,} B)" for k, v in
                                                              sorted(kinds.items(), key=lambda kv: -kv[1]["bytes"])[:10]))
    fm = results.get("find_max") or {}
    if fm:
        out += ["", "| web processes | transport | largest N within the targets | tokens/s there | streams per web process | "
                "CPU-s per 1k tokens there, per web process | first N that missed |", "|---|---|---|---|---|---|---|"]
        for f in fm.values():
            per = fmt(f["largest_streams"] / f["webs"], 0) if f["largest_streams"] else "–"
            cpu = " · ".join(fmt(v, 3) for v in f.get("web_cpu_s_per_1k_tokens") or []) or "–"
            out.append(f"| {f['webs']} | {f['transport']} | {f['largest_streams'] or 'none'} | {fmt(f['tokens_per_s'], 0)} | {per} | "
                       f"{cpu} | {f['first_miss'] or '–'} |")
    for w, inputs in (results.get("sizing_inputs") or {}).items():
        out += ["", f"Sizing from {w} web process(es) (bench/sizing.py):", "", sizing.markdown(sizing.Measured(**inputs))]
    return "\n".join(out)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", default="50,200", help="concurrent stream counts, comma-separated")
    parser.add_argument("--find-max", action="store_true", help=f"step N up (default {FIND_MAX_STEPS}) per web count "
                        "until a step misses the targets")
    parser.add_argument("--webs", default="1,2", help="web process counts, comma-separated")
    parser.add_argument("--transports", default="ws", help="ws, sse or both")
    parser.add_argument("--tokens", type=int, default=200, help="tokens per reply")
    parser.add_argument("--rate", type=float, default=50.0, help="tokens a second per reply")
    parser.add_argument("--rounds", type=int, default=2, help="measured replies per stream")
    parser.add_argument("--ttft-target-ms", type=float, default=TTFT_TARGET_MS, help="p99 of TTFT added")
    parser.add_argument("--relay-target-ms", type=float, default=RELAY_TARGET_MS, help="p99 of relay delay")
    parser.add_argument("--sse-attach", choices=["same", "next"], default="same", help="where an SSE stream's GET "
                        "of its events goes: the process that took its POST, or the next one (cross-process attach)")
    parser.add_argument("--max-generations", type=int, default=0, help="PARLEY_MAX_GENERATIONS per web process "
                        "(default: Parley's own, 240)")
    parser.add_argument("--out", default="", help="write every number as JSON here (bench/sizing.py --from reads it)")
    parser.add_argument("--nice", type=int, default=0, help="scheduling priority of the benchmark's processes (needs root)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, SQLite file) and the PostgreSQL database")
    args = parser.parse_args(argv)
    try:
        streams = FIND_MAX_STEPS if args.find_max and args.streams == parser.get_default("streams") else args.streams
        args.streams = sorted(int(n) for n in streams.split(",") if n)
        args.webs = sorted(int(n) for n in args.webs.split(",") if n)
    except ValueError:
        parser.error("--streams and --webs take comma-separated whole numbers")
    if not args.streams or min(args.streams) < 1 or not args.webs or min(args.webs) < 1:
        parser.error("--streams and --webs need at least one number, each at least 1")
    args.transports = [t for t in args.transports.split(",") if t]
    if not args.transports or set(args.transports) - {"ws", "sse"}:
        parser.error("--transports takes ws and/or sse")
    args.server = f"{sys.executable} -m parley.serve"
    args.settings = ""
    args.profile = ""
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    bench = ScaleBench(args)
    bench.prioritize(os.getpid())
    started = time.monotonic()
    try:
        bench.prepare()
        asyncio.run(bench.run())
    finally:
        bench.cleanup()
    bench.results["wall_s"] = time.monotonic() - started
    if args.out:
        Path(args.out).write_text(json.dumps(bench.results, indent=2, default=str))
    print(markdown(bench.results))
    print(f"\n(wall {bench.results['wall_s']:.0f} s)")
    for name, errors in bench.results.get("server_errors", {}).items():
        print(f"\n{name} logged {errors['errors']} errors; the first:\n{errors['first']}")


if __name__ == "__main__":
    main()
