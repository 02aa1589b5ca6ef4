"""Parley's streaming benchmark: one command starts everything, measures, prints the tables and stops.

    .venv/bin/python -m bench.load --streams 50,200 --transports ws,sse

What it does (docs/benchmarks.md explains each number):
1. starts the fake upstream (bench.upstream, its own process: 200 tokens at 50 tokens/s by
   default, each token carrying its sequence number and the upstream's send time);
2. makes a fresh SQLite database in a temp dir (migrations, bench users with API tokens and
   empty conversations, the bench models, row-write counting triggers: bench.setup_db);
3. starts one daphne process serving Parley against it (REDIS_URL from the environment, a
   unique PARLEY_KEY_PREFIX, OPENAI_BASE_URL pointing at the upstream);
4. for every N: N streams read from the upstream directly (the baseline), then N concurrent
   streams through Parley per transport (WebSocket: `send` frame -> deltas -> done; SSE: POST
   the message, then GET its events); one user and one conversation per stream, its replies
   being successive turns of that conversation;
5. measures the fixed CPU cost of a reply and of the send path alone, then overload behaviour
   on a second daphne started with a small PARLEY_MAX_GENERATIONS;
6. prints Markdown tables (and JSON with --out), stops every process it started and removes
   its Redis keys and temp dir.

Load shape per phase: each of the N slots starts at `i * reply_duration / N` (so the N replies
are spread, not in lockstep) and sends replies back to back: one warm-up reply, `--rounds`
measured replies, then more until every slot has finished its measured ones. So the measured
replies all run at a concurrency of N. CPU per 1,000 tokens is taken over the window in which
all N slots are busy.

The driver is one asyncio process (uvloop when installed) with aiohttp clients; it competes with
daphne, the upstream and Redis for the same cores, so its own CPU is reported beside theirs.
Everything is on 127.0.0.1; every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

ROOT = Path(__file__).resolve().parent.parent
TOKEN_RE = re.compile(r" t(\d+):(\d+)")
TOKEN_RE_BYTES = re.compile(rb" t(\d+):(\d+)")
CLK_TCK = os.sysconf("SC_CLK_TCK")
CONTENT = "Benchmark: please stream a reply."
REPLY_TIMEOUT = 120.0


def log(line: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)


# Processes -----------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def status_kib(pid: int, name: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(name + ":"):
                return int(line.split()[1])
    return 0


def reset_peak_rss(pid: int) -> bool:
    """Writing 5 to clear_refs resets VmHWM to the current RSS (Linux >= 4.0), so peaks are per phase."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def machine_busy_seconds() -> float:
    """CPU-seconds the whole machine spent busy (all cores), from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]
    return (sum(values[:8]) - idle) / CLK_TCK


def redis_server_pid(url: str) -> int | None:
    """The pid of the Redis server at `url` when it runs on this machine, else None."""
    try:
        import redis

        client = redis.Redis.from_url(url)
        pid = int(client.info("server")["process_id"])
        client.close()
    except Exception:  # noqa: BLE001 (a remote or unreachable Redis: not reported)
        return None
    return pid if os.path.exists(f"/proc/{pid}/stat") else None


def remove_redis_keys(url: str, prefix: str) -> None:
    """Every key under the benchmark's prefix, its Celery queue and the queue's binding."""
    try:
        import redis

        client = redis.Redis.from_url(url)
        keys = list(client.scan_iter(f"{prefix}*", count=1000)) + list(client.scan_iter(f"_kombu.binding.{prefix}*"))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start:start + 1000])
        client.close()
    except Exception as exc:  # noqa: BLE001  # cleanup must not hide the results
        log(f"could not remove Redis keys {prefix}*: {exc}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Child:
    name: str
    args: list[str]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen | None = None

    def start(self) -> Child:
        log_file = open(self.log_path, "ab")  # noqa: SIM115 (the child's output, open while it runs)
        self.process = subprocess.Popen(self.args, cwd=ROOT, env=self.env, stdout=log_file, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def wait_for_port(self, port: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited early:\n{self.log_path.read_text()[-3000:]}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not listen on {port}:\n{self.log_path.read_text()[-3000:]}")

    def wait_for_line(self, prefix: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.log_path.read_text(errors="replace").splitlines():
                if line.startswith(prefix):
                    return line[len(prefix):].strip()
            assert self.process is not None
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} never printed {prefix!r}:\n{self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        """SIGTERM to the process group this driver started (its own session), then SIGKILL."""
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)


# Statistics ----------------------------------------------------------------------------------------


def pct(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1]


def fmt(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


@dataclass(slots=True)
class Reply:
    """What the client saw of one reply."""

    count: int
    sent_ns: int = 0
    first_ns: int | None = None
    seen: bytearray = field(default_factory=bytearray)
    unexpected: int = 0  # sequence numbers outside 0..count-1
    relay_us: list[int] = field(default_factory=list)
    text_chars: int = 0
    final: dict[str, Any] | None = None
    message_id: int | None = None
    problem: str | None = None

    def __post_init__(self) -> None:
        self.seen = bytearray(self.count)

    def on_text(self, text: str, now_ns: int) -> int:
        now_us = now_ns // 1000
        tokens = 0
        for match in TOKEN_RE.finditer(text):
            seq = int(match.group(1))
            if self.first_ns is None:
                self.first_ns = now_ns
            if seq < self.count:
                self.seen[seq] = min(255, self.seen[seq] + 1)
            else:
                self.unexpected += 1
            self.relay_us.append(now_us - int(match.group(2)))
            tokens += 1
        self.text_chars += len(text)
        return tokens

    @property
    def lost(self) -> int:
        return self.seen.count(0)

    @property
    def duplicated(self) -> int:
        return sum(n - 1 for n in self.seen if n > 1) + self.unexpected

    @property
    def ttft_ms(self) -> float | None:
        return None if self.first_ns is None else (self.first_ns - self.sent_ns) / 1e6

    def check_final(self) -> None:
        """A Parley reply must end with `done` (complete), its cursor at the text length."""
        final = self.final
        if final is None:
            self.problem = self.problem or "no final event"
        elif final.get("type") != "done" or final.get("status") != "complete":
            self.problem = f"ended with {final.get('type')}/{final.get('status')}: {final.get('code')} {final.get('text')}"
        elif final.get("cursor") != f"{self.text_chars}-1":
            self.problem = f"final cursor {final.get('cursor')} but {self.text_chars} characters received"


# Clients -------------------------------------------------------------------------------------------


@dataclass
class BenchUser:
    """One bench user: its API token and its unused conversations (one per reply)."""

    token: str
    conversations: list[int]

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def next_conversation(self) -> int:
        return self.conversations.pop()


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="parley-bench-"))
        self.prefix = f"parley-bench-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.children: list[Child] = []
        self.tokens_received = 0
        self.results: dict[str, Any] = {"phases": [], "send_cost": [], "overload": {}}
        self.users: list[BenchUser] = []

    # Setup ---------------------------------------------------------------------------------------

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "DJANGO_SETTINGS_MODULE": "parley.settings",
            "DATABASE_URL": f"sqlite:///{self.tmp / 'bench.sqlite3'}",
            "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
            "PARLEY_KEY_PREFIX": self.prefix,
            "PARLEY_CELERY_QUEUE": self.prefix,  # title tasks queue here; no worker takes them; removed at the end
            "PARLEY_VAR_DIR": str(self.tmp),
            "OPENAI_BASE_URL": self.upstream_url,
            "OPENAI_API_KEY": "sk-bench",
            "PARLEY_DEMO_MODEL": "0",
            "LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
        })
        if self.args.settings:
            env["DJANGO_SETTINGS_MODULE"] = self.args.settings
        env.update(extra)
        return env

    def start_upstream(self) -> None:
        a = self.args
        child = Child("upstream", [sys.executable, "-m", "bench.upstream", "--port", "0", "--tokens", str(a.tokens),
                                   "--rate", str(a.rate)], dict(os.environ), self.tmp / "upstream.log").start()
        self.children.append(child)
        self.prioritize(child.pid)
        self.upstream = child
        self.upstream_url = child.wait_for_line("listening on ")
        log(f"upstream {self.upstream_url} (pid {child.pid})")

    @property
    def redis_pid(self) -> int | None:
        """The Redis server's pid when it runs on this machine (its CPU is reported beside daphne's)."""
        if not hasattr(self, "_redis_pid"):
            self._redis_pid = redis_server_pid(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
        return self._redis_pid

    def prioritize(self, pid: int) -> None:
        """--nice: run the benchmark's processes ahead of whatever else shares the machine."""
        if self.args.nice:
            os.setpriority(os.PRIO_PROCESS, pid, self.args.nice)

    def setup_database(self, users: int, conversations: int) -> None:
        env = self.env()
        subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True)
        out = subprocess.run([sys.executable, "-m", "bench.setup_db", "--upstream", self.upstream_url,
                              "--users", str(users), "--conversations", str(conversations)], cwd=ROOT, env=env, check=True,
                             capture_output=True, text=True).stdout
        data = json.loads(out.strip().splitlines()[-1])
        self.models = data["models"]
        self.users = [BenchUser(u["token"], u["conversations"]) for u in data["users"]]
        log(f"database ready: {users} users with {conversations} conversations each in {env['DATABASE_URL']}")

    def start_daphne(self, name: str, **extra: str) -> tuple[Child, str]:
        port = free_port()
        command = self.args.server.split() if self.args.server else [sys.executable, "-m", "daphne"]
        child = Child(name, [*command, "-b", "127.0.0.1", "-p", str(port), "parley.asgi:application"],
                      self.env(**extra), self.tmp / f"{name}.log").start()
        self.children.append(child)
        self.prioritize(child.pid)
        child.wait_for_port(port)
        log(f"{name} listening on {port} (pid {child.pid}): {' '.join(child.args[:4])}")
        return child, f"http://127.0.0.1:{port}"

    def db_writes(self) -> dict[str, int]:
        with contextlib.closing(sqlite3.connect(f"file:{self.tmp / 'bench.sqlite3'}?mode=ro", uri=True, timeout=10)) as db:
            return dict(db.execute("SELECT name, n FROM bench_writes").fetchall())

    # One reply per transport -----------------------------------------------------------------------

    async def ws_reply(self, ws: aiohttp.ClientWebSocketResponse, conversation: int, model: str | None = None,
                       count: int | None = None) -> Reply:
        reply = Reply(self.args.tokens if count is None else count)
        frame = {"type": "send", "conversation": conversation, "content": CONTENT}
        if model:
            frame["model"] = model
        reply.sent_ns = time.time_ns()
        await ws.send_str(orjson.dumps(frame).decode())
        async with asyncio.timeout(REPLY_TIMEOUT):
            while True:
                msg = await ws.receive()
                now = time.time_ns()
                if msg.type != aiohttp.WSMsgType.TEXT:
                    reply.problem = f"socket ended: {msg.type}"
                    return reply
                event = orjson.loads(msg.data)
                kind = event["type"]
                if kind == "delta":
                    self.tokens_received += reply.on_text(event["text"], now)
                elif kind == "message":
                    reply.message_id = event["assistant_message"]["id"]
                elif kind in {"done", "error"}:
                    reply.final = event
                    reply.check_final()
                    return reply
                # else a notice for the user's tabs (`conversation`: a title, from the worker): not this reply's

    async def sse_reply(self, session: aiohttp.ClientSession, base: str, user: BenchUser, conversation: int,
                        attach_base: str | None = None) -> Reply:
        """POST the message to `base`, then GET its events from `attach_base` (default the same process)."""
        reply = Reply(self.args.tokens)
        reply.sent_ns = time.time_ns()
        async with asyncio.timeout(REPLY_TIMEOUT):
            async with session.post(f"{base}/api/conversations/{conversation}/messages", data=orjson.dumps({"content": CONTENT}),
                                    headers={**user.auth, "Content-Type": "application/json"}) as response:
                body = await response.read()
                if response.status != 201:
                    reply.problem = f"send answered {response.status}: {body[:200]!r}"
                    return reply
            reply.message_id = orjson.loads(body)["assistant_message"]["id"]
            async with session.get(f"{attach_base or base}/api/messages/{reply.message_id}/events", headers=user.auth) as response:
                buffer = b""
                async for chunk in response.content.iter_any():
                    now = time.time_ns()
                    buffer += chunk
                    *complete, buffer = buffer.split(b"\n\n")
                    for raw in complete:
                        for line in raw.split(b"\n"):
                            if not line.startswith(b"data: "):
                                continue
                            event = orjson.loads(line[6:])
                            if event["type"] == "delta":
                                self.tokens_received += reply.on_text(event["text"], now)
                            else:
                                reply.final = event
                    if reply.final is not None:
                        break
        reply.check_final()
        return reply

    async def direct_reply(self, session: aiohttp.ClientSession) -> Reply:
        """The baseline: the same upstream read by a plain client, no Parley in between."""
        reply = Reply(self.args.tokens)
        body = orjson.dumps({"model": "bench-direct", "stream": True, "stream_options": {"include_usage": True},
                             "messages": [{"role": "user", "content": CONTENT}], "max_tokens": 4096})
        reply.sent_ns = time.time_ns()
        async with asyncio.timeout(REPLY_TIMEOUT):
            async with session.post(f"{self.upstream_url}/chat/completions", data=body,
                                    headers={"Content-Type": "application/json"}) as response:
                buffer = b""
                async for chunk in response.content.iter_any():
                    now = time.time_ns()
                    buffer += chunk
                    *complete, buffer = buffer.split(b"\n\n")
                    for raw in complete:
                        if raw == b"data: [DONE]":
                            reply.final = {"type": "done"}
                            continue
                        # token text is ASCII, so the JSON-escaped content is the text itself
                        self.tokens_received += reply.on_text(raw.decode(), now) if TOKEN_RE_BYTES.search(raw) else 0
        if reply.final is None:
            reply.problem = "no [DONE]"
        return reply

    # Phases ----------------------------------------------------------------------------------------

    async def run_phase(self, transport: str, n: int) -> dict[str, Any]:
        """N slots, spread over one reply duration, each sending replies back to back."""
        a = self.args
        reply_seconds = a.tokens / a.rate if a.rate else 1.0
        base = self.base_url
        measured: list[Reply] = []
        failures: list[str] = []
        connect_failures: list[str] = []
        replies_total = 0
        done_slots = 0
        all_measured = asyncio.Event()
        all_started = asyncio.Event()
        started_slots = 0
        marks: dict[str, int] = {}
        connector = aiohttp.TCPConnector(limit=0, force_close=False)
        session = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None))
        deadline = time.monotonic() + reply_seconds * (a.rounds + 4) + 60

        async def slot(index: int) -> None:
            nonlocal replies_total, started_slots
            round_ = 0
            user = self.users[index]
            conversation = user.next_conversation()  # one conversation per stream: its replies are turns in it
            await asyncio.sleep(index * reply_seconds / n)
            ws = None
            try:
                if transport == "ws":
                    ws = await self.ws_connect(session, base, user, connect_failures)
                while (round_ <= a.rounds or not all_measured.is_set()) and time.monotonic() < deadline:
                    if round_ == 0:
                        started_slots += 1
                        if started_slots == n:
                            marks["steady_from"] = time.time_ns()
                            all_started.set()
                            if pid and a.profile:
                                profiles.append(self.profile(f"{transport}-{n}", reply_seconds * a.rounds * 0.8))
                    if transport == "ws":
                        reply = await self.ws_reply(ws, conversation)
                    elif transport == "sse":
                        reply = await self.sse_reply(session, base, user, conversation)
                    else:
                        reply = await self.direct_reply(session)
                    replies_total += 1
                    if reply.problem:
                        failures.append(reply.problem)
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

        def slot_done() -> None:
            nonlocal done_slots
            done_slots += 1
            if done_slots == n:
                marks["steady_to"] = time.time_ns()
                all_measured.set()

        pid = self.daphne.pid if transport != "direct" else None
        profiles: list[asyncio.Task[None]] = []
        if pid:
            reset_peak_rss(pid)
        writes_before = self.db_writes() if pid else {}
        samples: list[tuple[int, float, float, float, float, int, float]] = []

        redis_pid = self.redis_pid

        async def sampler() -> None:
            while True:
                samples.append((time.time_ns(), cpu_seconds(pid) if pid else 0.0, cpu_seconds(self.upstream.pid),
                                cpu_seconds(os.getpid()), machine_busy_seconds(), self.tokens_received,
                                cpu_seconds(redis_pid) if redis_pid else 0.0))
                await asyncio.sleep(0.1)

        sampling = asyncio.create_task(sampler())
        started = time.time_ns()
        try:
            results = await asyncio.gather(*(slot(i) for i in range(n)), return_exceptions=True)
        finally:
            sampling.cancel()
            await session.close()
        for result in results:
            if isinstance(result, BaseException):
                failures.append(f"slot crashed: {type(result).__name__}: {result}")
        ended = time.time_ns()
        for task in profiles:
            await task
        writes = {k: v - writes_before.get(k, 0) for k, v in self.db_writes().items()} if pid else {}
        # The steady window: every slot busy (from the last slot's first send to the end of the measured rounds).
        lo, hi = marks.get("steady_from", started), marks.get("steady_to", ended)
        window = [s for s in samples if lo <= s[0] <= hi] or samples
        first, last = window[0], window[-1]
        seconds = (last[0] - first[0]) / 1e9 or 1e-9
        tokens = last[5] - first[5]
        relay = [us / 1000 for r in measured for us in r.relay_us]
        ttft = [r.ttft_ms for r in measured if r.ttft_ms is not None]
        phase = {
            "transport": transport,
            "streams": n,
            "replies_measured": len(measured),
            "replies_total": replies_total,
            "failures": len(failures),
            "failure_examples": failures[:5],
            "connect_failures": len(connect_failures),  # refused or reset WebSocket handshakes (each retried up to 5 times)
            "connect_failure_examples": connect_failures[:2],
            "ttft_ms_p50": pct(ttft, 50),
            "ttft_ms_p99": pct(ttft, 99),
            "relay_ms_p50": pct(relay, 50),
            "relay_ms_p99": pct(relay, 99),
            "relay_ms_max": max(relay) if relay else None,
            "tokens_measured": len(relay),
            # Over the replies that ended (a final event arrived); replies that failed before are counted as failures.
            "lost": sum(r.lost for r in measured if r.final is not None),
            "duplicated": sum(r.duplicated for r in measured if r.final is not None),
            "window_s": seconds,
            "window_tokens": tokens,
            "server_cpu_s_per_1k_tokens": (last[1] - first[1]) / tokens * 1000 if pid and tokens else None,
            "server_cpu_pct": (last[1] - first[1]) / seconds * 100 if pid else None,
            "upstream_cpu_pct": (last[2] - first[2]) / seconds * 100,
            "client_cpu_pct": (last[3] - first[3]) / seconds * 100,
            "redis_cpu_pct": (last[6] - first[6]) / seconds * 100 if redis_pid else None,
            "machine_busy_pct": (last[4] - first[4]) / seconds * 100,
            "peak_rss_mib": status_kib(pid, "VmHWM") / 1024 if pid else None,
            "db_writes": writes,
            "db_writes_per_reply": {k: v / replies_total for k, v in writes.items() if v} if replies_total else {},
            "duration_s": (ended - started) / 1e9,
        }
        phase["others_cpu_pct"] = (phase["machine_busy_pct"] - (phase["server_cpu_pct"] or 0) - phase["upstream_cpu_pct"]
                                   - phase["client_cpu_pct"] - (phase["redis_cpu_pct"] or 0))
        return phase

    async def send_cost(self, transport: str, model_key: str, count: int, concurrency: int = 4) -> dict[str, Any]:
        """CPU of daphne per send, measured over `count` sends at a small concurrency.

        "bench-tiny": a whole one-token reply (send, provider call, first token, final write, events).
        "bench-hold": the send path alone (up to the provider request being in flight; the upstream
        holds the first token), minus the background cost of the held generations, which are stopped after.
        """
        model = self.models[model_key]
        pid = self.daphne.pid
        connector = aiohttp.TCPConnector(limit=0)
        session = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None))
        latencies: list[float] = []
        held: list[tuple[BenchUser, int]] = []
        problems: list[str] = []
        per_worker = count // concurrency
        sockets: list[aiohttp.ClientWebSocketResponse] = []
        stats_before = await self.upstream_stats(session)
        try:
            if transport == "ws":
                sockets = [await session.ws_connect(f"{self.base_url.replace('http', 'ws', 1)}/ws/chat/", headers=self.users[i].auth)
                           for i in range(concurrency)]
            await asyncio.sleep(0.5)
            cpu_before, t_before = cpu_seconds(pid), time.monotonic()
            profiling = self.profile(f"send-{transport}-{model_key}", 4) if self.args.profile else None

            async def worker(index: int) -> None:
                user = self.users[index]
                for _ in range(per_worker):
                    started = time.monotonic()
                    if transport == "ws":
                        ws = sockets[index]
                        frame = {"type": "send", "conversation": user.next_conversation(), "content": CONTENT, "model": model}
                        await ws.send_str(orjson.dumps(frame).decode())
                        while True:  # the `message` answer; for tiny replies, on to the final event
                            event = orjson.loads((await ws.receive(timeout=30)).data)
                            if event["type"] == "message":
                                latencies.append((time.monotonic() - started) * 1000)
                                held.append((user, event["assistant_message"]["id"]))
                                if model_key == "bench-hold":
                                    break
                            elif event["type"] in {"done", "error"}:
                                if event["type"] == "error" or event.get("status") != "complete":
                                    problems.append(str(event))
                                break
                    else:
                        async with session.post(f"{self.base_url}/api/conversations/{user.next_conversation()}/messages",
                                                data=orjson.dumps({"content": CONTENT, "model": model}),
                                                headers={**user.auth, "Content-Type": "application/json"}) as response:
                            body = await response.read()
                        latencies.append((time.monotonic() - started) * 1000)
                        if response.status != 201:
                            problems.append(f"{response.status} {body[:200]!r}")
                            continue
                        message_id = orjson.loads(body)["assistant_message"]["id"]
                        held.append((user, message_id))
                        if model_key == "bench-tiny":  # read the reply to its end, like a client would
                            async with session.get(f"{self.base_url}/api/messages/{message_id}/events", headers=user.auth) as r:
                                text = await r.read()
                            if b"event: done" not in text:
                                problems.append(text[-200:].decode(errors="replace"))

            await asyncio.gather(*(worker(i) for i in range(concurrency)))
            sends = per_worker * concurrency
            if model_key == "bench-hold":  # until every provider request reached the upstream
                for _ in range(200):
                    stats = await self.upstream_stats(session)
                    if stats["requests"] - stats_before["requests"] >= sends:
                        break
                    await asyncio.sleep(0.02)
            else:
                await asyncio.sleep(0.3)  # final writes and title enqueues run just after the final event
            cpu_after, t_after = cpu_seconds(pid), time.monotonic()
            if profiling is not None:
                await profiling
            background = 0.0
            if model_key == "bench-hold":
                # The held generations still cost a little (flush ticks, stop-flag checks): measure and subtract.
                await asyncio.sleep(2.0)
                background = (cpu_seconds(pid) - cpu_after) / 2.0 * (t_after - t_before)
                await self.stop_all(session, held)
        finally:
            for ws in sockets:
                await ws.close()
            await session.close()
        result = {
            "transport": transport,
            "kind": "send path (provider call in flight)" if model_key == "bench-hold" else "whole one-token reply",
            "sends": sends,
            "concurrency": concurrency,
            "cpu_ms_per_send": (cpu_after - cpu_before - background) / sends * 1000,
            "background_cpu_ms_subtracted": background * 1000,
            "send_latency_ms_p50": pct(latencies, 50),
            "send_latency_ms_p99": pct(latencies, 99),
            "problems": len(problems),
            "problem_examples": problems[:3],
        }
        return result

    async def stop_all(self, session: aiohttp.ClientSession, messages: list[tuple[BenchUser, int]], base: str | None = None) -> None:
        base = base or self.base_url

        async def stop(user: BenchUser, message_id: int) -> None:
            async with session.post(f"{base}/api/messages/{message_id}/stop", headers=user.auth) as response:
                await response.read()

        for start in range(0, len(messages), 20):
            await asyncio.gather(*(stop(u, m) for u, m in messages[start:start + 20]))
        await asyncio.sleep(1.0)

    async def ws_connect(self, session: aiohttp.ClientSession, base: str, user: BenchUser,
                         failures: list[str]) -> aiohttp.ClientWebSocketResponse:
        """Connect, retrying a refused or reset handshake a few times (each failure is reported)."""
        for attempt in range(5):
            try:
                return await session.ws_connect(f"{base.replace('http', 'ws', 1)}/ws/chat/", headers=user.auth, max_msg_size=0)
            except (aiohttp.ClientError, OSError) as exc:
                failures.append(f"WebSocket connect failed (attempt {attempt + 1}): {type(exc).__name__}: {exc}")
                await asyncio.sleep(0.2 * (attempt + 1))
        raise RuntimeError("WebSocket connect failed 5 times")

    def profile(self, name: str, seconds: float) -> asyncio.Task[None]:
        """py-spy on daphne (non-blocking sampling, 100 Hz) for `seconds`, collapsed stacks in --profile DIR."""
        out = Path(self.args.profile) / f"{name}.txt"
        out.parent.mkdir(parents=True, exist_ok=True)

        async def run() -> None:
            process = await asyncio.create_subprocess_exec(
                str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(self.daphne.pid), "--duration",
                str(max(1, int(seconds))), "--rate", "100", "--nonblocking", "--format", "raw", "--output", str(out),
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
            await process.wait()

        return asyncio.create_task(run())

    async def upstream_stats(self, session: aiohttp.ClientSession) -> dict[str, Any]:
        origin = self.upstream_url.rsplit("/v1", 1)[0]
        async with session.get(f"{origin}/stats") as response:
            return await response.json()

    async def overload(self, limit: int, extra: int) -> dict[str, Any]:
        """A daphne with PARLEY_MAX_GENERATIONS=limit: `limit` held replies, then `extra` more sends."""
        child, base = self.start_daphne("daphne-overload", PARLEY_MAX_GENERATIONS=str(limit))
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=30))
        user = self.users[0]
        headers = {**user.auth, "Content-Type": "application/json"}
        model = self.models["bench-hold"]
        result: dict[str, Any] = {"limit": limit, "extra": extra}
        try:
            async def post(conversation: int) -> tuple[int, dict[str, str], bytes, float]:
                started = time.monotonic()
                async with session.post(f"{base}/api/conversations/{conversation}/messages",
                                        data=orjson.dumps({"content": CONTENT, "model": model}), headers=headers) as response:
                    body = await response.read()
                    return response.status, dict(response.headers), body, (time.monotonic() - started) * 1000

            accepted = [await post(user.next_conversation()) for _ in range(limit)]
            held = [(user, orjson.loads(body)["assistant_message"]["id"]) for status, _, body, _ in accepted if status == 201]
            refused = await asyncio.gather(*(post(user.next_conversation()) for _ in range(extra)))
            statuses: dict[str, int] = {}
            for status, _, _, _ in refused:
                statuses[str(status)] = statuses.get(str(status), 0) + 1
            latencies = [ms for _, _, _, ms in refused]
            first_body = orjson.loads(refused[0][2]) if refused else {}
            async with session.ws_connect(f"{base.replace('http', 'ws', 1)}/ws/chat/", headers=user.auth) as ws:
                started = time.monotonic()
                await ws.send_str(orjson.dumps({"type": "send", "conversation": user.next_conversation(), "content": CONTENT,
                                                "model": model, "ref": "overload"}).decode())
                ws_event = orjson.loads((await ws.receive(timeout=10)).data)
                ws_ms = (time.monotonic() - started) * 1000
            await self.stop_all(session, held, base)
            after_stop = await post(user.next_conversation())
            if after_stop[0] == 201:
                await self.stop_all(session, [(user, orjson.loads(after_stop[2])["assistant_message"]["id"])], base)
            result.update({
                "accepted": sum(1 for status, *_ in accepted if status == 201),
                "refused_statuses": statuses,
                "retry_after_headers": sorted({h.get("Retry-After", "") for _, h, _, _ in refused}),
                "refusal_body": first_body,
                "refusal_ms_p50": pct(latencies, 50),
                "refusal_ms_p99": pct(latencies, 99),
                "refusal_ms_max": max(latencies) if latencies else None,
                "accepted_send_ms_p50": pct([ms for *_, ms in accepted], 50),
                "ws_refusal": ws_event,
                "ws_refusal_ms": ws_ms,
                "accepted_after_stop": after_stop[0],
            })
        finally:
            await session.close()
            child.stop()
        return result

    async def warm_up(self) -> None:
        """Imports, connection pools and caches: a few replies of each kind before anything is measured."""
        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
        try:
            user = self.users[0]
            async with session.ws_connect(f"{self.base_url.replace('http', 'ws', 1)}/ws/chat/", headers=user.auth) as ws:
                for _ in range(3):
                    reply = await self.ws_reply(ws, user.next_conversation(), self.models["bench-tiny"], count=1)
                    if reply.problem:
                        raise RuntimeError(f"warm-up reply failed: {reply.problem}")
            await asyncio.gather(*(self.sse_reply(session, self.base_url, u, u.next_conversation()) for u in self.users[:3]))
            await asyncio.gather(*(self.direct_reply(session) for _ in range(3)))
        finally:
            await session.close()

    # The run ---------------------------------------------------------------------------------------

    async def run(self) -> None:
        a = self.args
        self.daphne, self.base_url = self.start_daphne("daphne")
        self.results["machine"] = machine_facts()
        self.results["command"] = " ".join(["python -m bench.load", *sys.argv[1:]])
        self.results["settings"] = {"tokens": a.tokens, "rate": a.rate, "rounds": a.rounds, "server": a.server or "python -m daphne",
                                    "django_settings": a.settings or "parley.settings", "nice": a.nice}
        log("warming up")
        await self.warm_up()
        for n in a.streams:
            for transport in ["direct", *a.transports]:
                log(f"phase: {transport} x {n}")
                phase = await self.run_phase(transport, n)
                self.results["phases"].append(phase)
                log(summary_line(phase))
                await asyncio.sleep(2.0)
        if a.send_cost:
            for transport, model_key, count in [("ws", "bench-tiny", 200), ("sse", "bench-tiny", 200),
                                                ("ws", "bench-hold", 100), ("sse", "bench-hold", 100)]:
                log(f"send cost: {transport} {model_key}")
                result = await self.send_cost(transport, model_key, count)
                self.results["send_cost"].append(result)
                log(json.dumps(result))
                await asyncio.sleep(1.0)
        if a.overload:
            limit, extra = a.overload
            log(f"overload: PARLEY_MAX_GENERATIONS={limit}, {limit}+{extra} sends")
            self.results["overload"] = await self.overload(limit, extra)
            log(json.dumps(self.results["overload"]))
        self.results["load_average_after"] = os.getloadavg()

    def server_errors(self) -> dict[str, Any]:
        """Errors daphne logged (LOG_LEVEL=WARNING): their count and the first traceback, for the report."""
        found: dict[str, Any] = {}
        for child in self.children:
            if not child.name.startswith("daphne") or not child.log_path.exists():
                continue
            lines = child.log_path.read_text(errors="replace").splitlines()
            # Django logs every 5xx at ERROR, the 503s of admission control too: those are expected.
            starts = [i for i, line in enumerate(lines) if " ERROR " in line and "Service Unavailable" not in line]
            if starts:
                found[child.name] = {"errors": len(starts), "first": "\n".join(lines[starts[0]:starts[0] + 40])}
        return found

    def cleanup(self) -> None:
        for child in reversed(self.children):
            child.stop()
        self.results["server_errors"] = self.server_errors()
        remove_redis_keys(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"), self.prefix)
        if self.args.keep:
            log(f"kept {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


def machine_facts() -> dict[str, Any]:
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    import platform

    return {"nproc": os.cpu_count(), "cpu_model": model, "python": platform.python_version(),
            "kernel": platform.release(), "load_average_before": os.getloadavg()}


def summary_line(p: dict[str, Any]) -> str:
    return (f"{p['transport']:>6} N={p['streams']:<4} TTFT p50/p99 {fmt(p['ttft_ms_p50'])}/{fmt(p['ttft_ms_p99'])} ms  "
            f"relay p50/p99 {fmt(p['relay_ms_p50'])}/{fmt(p['relay_ms_p99'])} ms  lost {p['lost']} dup {p['duplicated']}  "
            f"failures {p['failures']}{connects(p)}  cpu/1k {fmt(p['server_cpu_s_per_1k_tokens'], 3)}  server {fmt(p['server_cpu_pct'], 0)}%  "
            f"redis {fmt(p.get('redis_cpu_pct'), 0)}%  upstream {fmt(p['upstream_cpu_pct'], 0)}%  client {fmt(p['client_cpu_pct'], 0)}%  others {fmt(p['others_cpu_pct'], 0)}%")


def connects(phase: dict[str, Any]) -> str:
    n = phase.get("connect_failures", 0)
    return f" (+{n} refused handshakes)" if n else ""


def markdown(results: dict[str, Any]) -> str:
    out = []
    phases = results["phases"]
    direct = {p["streams"]: p for p in phases if p["transport"] == "direct"}
    out.append("| N | transport | TTFT p50 / p99 (ms) | TTFT added p50 / p99 (ms) | relay p50 / p99 (ms) | lost / dup | "
               "tokens/s | CPU-s per 1k tokens | daphne CPU | peak RSS (MiB) | redis / upstream / client / other CPU | failed |")
    out.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for p in phases:
        base = direct.get(p["streams"])
        added = ("–" if p["transport"] == "direct" or base is None else
                 f"{fmt(p['ttft_ms_p50'] - base['ttft_ms_p50'])} / {fmt(p['ttft_ms_p99'] - base['ttft_ms_p99'])}")
        out.append(
            f"| {p['streams']} | {p['transport']} | {fmt(p['ttft_ms_p50'])} / {fmt(p['ttft_ms_p99'])} | {added} | "
            f"{fmt(p['relay_ms_p50'])} / {fmt(p['relay_ms_p99'])} | {p['lost']} / {p['duplicated']} | "
            f"{fmt(p['window_tokens'] / p['window_s'], 0)} | {fmt(p['server_cpu_s_per_1k_tokens'], 3)} | {fmt(p['server_cpu_pct'], 0)}% | {fmt(p['peak_rss_mib'], 0)} | "
            f"{fmt(p.get('redis_cpu_pct'), 0)}% / {fmt(p['upstream_cpu_pct'], 0)}% / {fmt(p['client_cpu_pct'], 0)}% / "
            f"{fmt(p['others_cpu_pct'], 0)}% | "
            f"{p['failures']} of {p['replies_total']}{connects(p)} |"
        )
    writes = [p for p in phases if p["db_writes_per_reply"]]
    if writes:
        out.append("")
        out.append("| N | transport | replies | chat_message inserts / reply | chat_message updates / reply | chat_conversation updates / reply | accounts_apitoken updates |")
        out.append("|---|---|---|---|---|---|---|")
        for p in writes:
            w = p["db_writes_per_reply"]
            out.append(f"| {p['streams']} | {p['transport']} | {p['replies_total']} | {fmt(w.get('chat_message_insert', 0), 2)} | "
                       f"{fmt(w.get('chat_message_update', 0), 2)} | {fmt(w.get('chat_conversation_update', 0), 2)} | "
                       f"{p['db_writes'].get('accounts_apitoken_update', 0)} |")
    if results["send_cost"]:
        out.append("")
        out.append("| transport | what | sends | daphne CPU per send (ms) | send latency p50 / p99 (ms) | problems |")
        out.append("|---|---|---|---|---|---|")
        for s in results["send_cost"]:
            out.append(f"| {s['transport']} | {s['kind']} | {s['sends']} | {fmt(s['cpu_ms_per_send'], 2)} | "
                       f"{fmt(s['send_latency_ms_p50'])} / {fmt(s['send_latency_ms_p99'])} | {s['problems']} |")
    o = results.get("overload")
    if o:
        out.append("")
        out.append(f"Overload (PARLEY_MAX_GENERATIONS={o['limit']}): {o['accepted']} accepted, {o['extra']} more sent at once -> "
                   f"{o['refused_statuses']} with Retry-After {o['retry_after_headers']}, refused in p50 {fmt(o['refusal_ms_p50'])} / "
                   f"p99 {fmt(o['refusal_ms_p99'])} / max {fmt(o['refusal_ms_max'])} ms (an accepted send took p50 "
                   f"{fmt(o['accepted_send_ms_p50'])} ms); WebSocket: {o['ws_refusal'].get('code')} retry_after="
                   f"{o['ws_refusal'].get('retry_after')} in {fmt(o['ws_refusal_ms'])} ms; after stopping the held replies a send got "
                   f"{o['accepted_after_stop']}.")
    return "\n".join(out)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", default="50,200", help="concurrent stream counts, comma-separated")
    parser.add_argument("--transports", default="ws,sse", help="ws, sse or both")
    parser.add_argument("--tokens", type=int, default=200, help="tokens per reply")
    parser.add_argument("--rate", type=float, default=50.0, help="tokens a second per reply")
    parser.add_argument("--rounds", type=int, default=2, help="measured replies per slot")
    parser.add_argument("--server", default="", help="command that starts the server, given -b/-p/app after it (default: python -m daphne)")
    parser.add_argument("--no-send-cost", dest="send_cost", action="store_false", help="skip the per-send CPU measurements")
    parser.add_argument("--overload", default="20,20", help="LIMIT,EXTRA for the overload check ('' to skip)")
    parser.add_argument("--out", default="", help="write the results as JSON here")
    parser.add_argument("--profile", default="", help="record py-spy profiles of daphne (collapsed stacks) into this dir")
    parser.add_argument("--settings", default="", help="DJANGO_SETTINGS_MODULE for daphne (default parley.settings)")
    parser.add_argument("--nice", type=int, default=0, help="scheduling priority for daphne, upstream and driver "
                        "(e.g. -10 on a machine shared with other work; needs root)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (database, logs)")
    args = parser.parse_args(argv)
    args.streams = [int(n) for n in args.streams.split(",") if n]
    args.transports = [t for t in args.transports.split(",") if t]
    if set(args.transports) - {"ws", "sse"}:
        parser.error("--transports takes ws and/or sse")
    args.overload = tuple(int(x) for x in args.overload.split(",")) if args.overload else None
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    bench = Bench(args)
    bench.prioritize(os.getpid())
    # One user per stream; per user a conversation for every reply it may send (the first users also
    # serve the send-cost and overload checks).
    users = max(max(args.streams, default=0), 4)
    conversations = len(args.streams) * len(args.transports) + 250
    try:
        bench.start_upstream()
        bench.setup_database(users, conversations)
        asyncio.run(bench.run())
    finally:
        bench.cleanup()
    if args.out:
        Path(args.out).write_text(json.dumps(bench.results, indent=2, default=str))
    print(markdown(bench.results))
    for name, errors in bench.results.get("server_errors", {}).items():
        print(f"\n{name} logged {errors['errors']} errors; the first:\n{errors['first']}")


if __name__ == "__main__":
    main()
