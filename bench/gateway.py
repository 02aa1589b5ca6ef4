"""The gateway's streaming overhead beside the upstream read directly and beside LiteLLM's proxy.

    .venv/bin/python bench/gateway.py --streams 50,200

One command starts everything, measures, prints a Markdown table and stops:
1. the fake upstream (bench.upstream, its own process; 200 tokens at 50 tokens/s by default, each
   token carrying its sequence number and the upstream's send time);
2. Parley: a fresh PostgreSQL database (migrations, bench.gateway_setup: a priced model on the
   upstream, a plan setting every limit and a budget, one user per stream with a gateway-scoped
   token), Redis (REDIS_URL, default db 3, keys under a unique prefix, removed at the end), and one
   server process (`python -m parley.serve`: daphne on uvloop) serving `POST /v1/chat/completions`;
3. LiteLLM's proxy, from its own virtualenv (--litellm, default /work/litellm-venv), one worker,
   with the same model and prices. With --litellm-keys virtual (the default) it gets a fresh
   PostgreSQL database and a master key, and each stream gets a virtual key made through
   `/key/generate` with max_budget, rpm_limit and tpm_limit: LiteLLM's per-key budgets and limits,
   with spend tracked in its database. That needs Prisma's query and schema engines; where they
   cannot be had, --litellm-keys master runs the proxy without a database (one master key, no
   budgets) and the table says so;
4. for every N, three phases of N concurrent streaming calls, each stream sending calls back to
   back (one warm-up, --rounds measured, more until every stream has finished its measured ones,
   so every measured call runs at a concurrency of N): **direct** (the upstream itself), **parley**
   and **litellm**, the same request body each time;
5. prints the table (and JSON with --out), checks that Parley's ledger and LiteLLM's spend logs hold
   the calls, stops every process it started and drops the databases it created.

Client side: one asyncio process (uvloop) with aiohttp and its own SSE reader, the same for all
three. TTFT: first token's arrival minus the request's start. Relay delay: each token's arrival
minus the upstream's send time written in it. CPU: utime+stime of the proxy's process tree
(children included, and those reaped) over the window in which all N streams are busy, per 1,000
tokens received. Everything is on 127.0.0.1; every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script (bench/gateway.py) as well as a module
    sys.path.insert(0, str(ROOT))

from bench.gateway_proc import tree_cpu_seconds, tree_rss_kib  # noqa: E402
from bench.load import (  # noqa: E402
    TOKEN_RE_BYTES, Child, Reply, cpu_seconds, fmt, free_port, log, machine_facts, pct, redis_server_pid,
    remove_redis_keys,
)

CONTENT = "Benchmark: please stream a reply."
CALL_TIMEOUT = 120.0
PG = "postgres://postgres@127.0.0.1:5432"
LITELLM_MASTER_KEY = "sk-bench-master"
# LiteLLM's per-key limits, as Parley's plan's (bench/gateway_setup.py): checked on every call, never reached.
KEY_LIMITS = {"rpm_limit": 100_000, "tpm_limit": 10**12, "max_parallel_requests": 1_000}


@dataclass
class Target:
    """Where a phase's calls go: a chat completions URL, one key per stream, the process tree measured."""

    name: str
    url: str
    keys: list[str]
    pid: int | None
    probe: str = ""  # a key allowed one request a minute
    database: str = ""  # its PostgreSQL database, whose server processes' CPU is counted apart
    uses_redis: bool = False


def create_database(name: str) -> str:
    import psycopg

    with psycopg.connect(f"{PG}/postgres", autocommit=True) as db:
        db.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        db.execute(f'CREATE DATABASE "{name}"')
    return f"{PG}/{name}"


def drop_database(name: str) -> None:
    import psycopg

    with contextlib.suppress(Exception), psycopg.connect(f"{PG}/postgres", autocommit=True) as db:
        db.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Backing:
    """CPU of the services a proxy leans on, counted apart from its own process: the PostgreSQL server
    processes connected to its database (found by pg_stat_activity at each sample; a connection
    closed within the window loses its share) and, for Parley, the Redis server (shared with
    anything else using that server: on a quiet machine, Parley alone)."""

    def __init__(self, target: Target, redis_pid: int | None) -> None:
        self.target = target
        self.redis_pid = redis_pid if target.uses_redis else None
        self.db = None
        if target.database:
            import psycopg

            self.db = psycopg.connect(f"{PG}/postgres", autocommit=True)

    @property
    def used(self) -> bool:
        return self.db is not None or self.redis_pid is not None

    def sample(self) -> dict[int, float]:
        pids = []
        if self.db is not None:
            pids = [row[0] for row in self.db.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s",
                                                      [self.target.database])]
        if self.redis_pid:
            pids.append(self.redis_pid)
        found = {}
        for pid in pids:
            with contextlib.suppress(OSError):
                found[pid] = cpu_seconds(pid)
        return found

    @staticmethod
    def spent(first: dict[int, float], last: dict[int, float]) -> float:
        """Over the processes seen at the end: what each spent since the first sample (or since it started)."""
        return sum(value - first.get(pid, 0.0) for pid, value in last.items())

    def close(self) -> None:
        if self.db is not None:
            self.db.close()


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="parley-gwbench-"))
        tag = f"{os.getpid()}_{uuid.uuid4().hex[:6]}"
        self.prefix = f"parley-gwbench-{tag}"
        self.parley_db = f"parley_gwbench_{tag}"
        self.litellm_db = f"litellm_gwbench_{tag}"
        self.databases: list[str] = []
        self.children: list[Child] = []
        self.tokens_received = 0
        self.results: dict[str, Any] = {"phases": []}
        self.redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/3")
        self.redis_pid = redis_server_pid(self.redis_url)

    # Setup ---------------------------------------------------------------------------------------

    def start(self, child: Child) -> Child:
        self.children.append(child.start())
        if self.args.nice:
            os.setpriority(os.PRIO_PROCESS, child.pid, self.args.nice)
        return child

    def start_upstream(self) -> None:
        a = self.args
        self.upstream = self.start(Child("upstream", [sys.executable, "-m", "bench.upstream", "--port", "0", "--tokens",
                                                      str(a.tokens), "--rate", str(a.rate)], dict(os.environ),
                                         self.tmp / "upstream.log"))
        self.upstream_url = self.upstream.wait_for_line("listening on ")
        log(f"upstream {self.upstream_url} (pid {self.upstream.pid})")

    def parley_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "DJANGO_SETTINGS_MODULE": "parley.settings",
            "DATABASE_URL": self.parley_database_url,
            "REDIS_URL": self.redis_url,
            "PARLEY_KEY_PREFIX": self.prefix,
            "PARLEY_CELERY_QUEUE": self.prefix,  # nothing waits on a worker here; the queue is removed at the end
            "PARLEY_VAR_DIR": str(self.tmp),
            "OPENAI_BASE_URL": self.upstream_url,
            "OPENAI_API_KEY": "sk-bench",
            "PARLEY_DEMO_MODEL": "0",
            "LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
        })
        return env

    def start_parley(self, streams: int) -> Target:
        if self.args.parley_db == "sqlite":
            self.parley_database_url = f"sqlite:///{self.tmp / 'parley.sqlite3'}"
        else:
            self.parley_database_url = create_database(self.parley_db)
            self.databases.append(self.parley_db)
        env = self.parley_env()
        subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True)
        out = subprocess.run([sys.executable, "-m", "bench.gateway_setup", "--upstream", self.upstream_url, "--users",
                              str(streams)], cwd=ROOT, env=env, check=True, capture_output=True, text=True).stdout
        data = json.loads(out.strip().splitlines()[-1])
        port = free_port()
        child = self.start(Child("parley", [sys.executable, "-m", "parley.serve", "-b", "127.0.0.1", "-p", str(port),
                                            "parley.asgi:application"], env, self.tmp / "parley.log"))
        child.wait_for_port(port)
        log(f"parley listening on {port} (pid {child.pid}), {streams} users with gateway tokens")
        return Target("parley", f"http://127.0.0.1:{port}/v1/chat/completions", data["tokens"], child.pid,
                      probe=data["probe"], database=self.parley_db if self.args.parley_db == "postgres" else "",
                      uses_redis=True)

    def litellm_config(self, keys: str) -> Path:
        from bench.gateway_setup import INPUT_PRICE_PER_MILLION, MODEL, OUTPUT_PRICE_PER_MILLION

        general: dict[str, Any] = {"master_key": LITELLM_MASTER_KEY}
        if keys == "custom":
            shutil.copy(ROOT / "bench" / "gateway_litellm_auth.py", self.tmp / "gateway_litellm_auth.py")
            general.update({"custom_auth": "gateway_litellm_auth.user_api_key_auth", "custom_auth_run_common_checks": True})
        config = {
            "model_list": [{
                "model_name": MODEL,
                "litellm_params": {
                    "model": f"openai/{MODEL}", "api_base": self.upstream_url, "api_key": "sk-bench",
                    "input_cost_per_token": float(INPUT_PRICE_PER_MILLION) / 1e6,
                    "output_cost_per_token": float(OUTPUT_PRICE_PER_MILLION) / 1e6,
                },
            }],
            "litellm_settings": {"drop_params": True, "telemetry": False, "set_verbose": False},
            "general_settings": general,
        }
        path = self.tmp / "litellm.json"  # YAML is a superset of JSON
        path.write_text(json.dumps(config))
        return path

    def start_litellm(self, streams: int) -> Target:
        """LiteLLM's proxy with the keys asked for; `auto` tries virtual keys first and, when its
        database cannot start (Prisma's engines cannot be downloaded), falls back to `custom`."""
        keys = self.args.litellm_keys
        if keys != "auto":
            return self._start_litellm(streams, keys)
        try:
            return self._start_litellm(streams, "virtual")
        except RuntimeError as error:
            lines = [line.strip() for line in str(error).splitlines() if line.strip()]
            reason = next((line for line in lines if line.startswith("Error:")), lines[-1] if lines else str(error))
            self.results["litellm_fallback"] = reason
            log(f"LiteLLM's virtual keys could not run ({reason}); per-key limits through custom auth instead")
            drop_database(self.litellm_db)
            self.databases.remove(self.litellm_db)
            return self._start_litellm(streams, "custom")

    def _start_litellm(self, streams: int, keys: str) -> Target:
        from bench.gateway_setup import BUDGET, MODEL

        a = self.args
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "REDIS_"))}
        env.update({
            "LITELLM_MASTER_KEY": LITELLM_MASTER_KEY,
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no fetch of the price list from the network
            "LITELLM_LOG": "ERROR",  # as Parley's LOG_LEVEL=WARNING: no line per request
            "DISABLE_ADMIN_UI": "True",
            "LITELLM_DONT_SHOW_FEEDBACK_BOX": "True",
            "PYTHONUNBUFFERED": "1",
            "PATH": f"{Path(a.litellm) / 'bin'}:{os.environ.get('PATH', '')}",
            # The limits of every key, as Parley's plan's (bench/gateway_setup.py)
            "GWBENCH_MAX_BUDGET": str(BUDGET), "GWBENCH_RPM": str(KEY_LIMITS["rpm_limit"]),
            "GWBENCH_TPM": str(KEY_LIMITS["tpm_limit"]), "GWBENCH_PARALLEL": str(KEY_LIMITS["max_parallel_requests"]),
            "GWBENCH_MODEL": MODEL, "GWBENCH_KEYS": str(streams),
        })
        if keys == "virtual":
            env["DATABASE_URL"] = create_database(self.litellm_db).replace("postgres://", "postgresql://", 1)
            self.databases.append(self.litellm_db)
            env["STORE_MODEL_IN_DB"] = "False"
        port = free_port()
        child = self.start(Child(f"litellm-{keys}", [str(Path(a.litellm) / "bin" / "litellm"), "--config",
                                                     str(self.litellm_config(keys)), "--host", "127.0.0.1", "--port",
                                                     str(port), "--num_workers", "1"], env, self.tmp / f"litellm-{keys}.log"))
        child.wait_for_port(port, timeout=300)
        base = f"http://127.0.0.1:{port}"
        probe = ""
        if keys == "virtual":
            key_list = asyncio.run(self.litellm_keys(base, streams, "gwbench"))
            probe = asyncio.run(self.litellm_keys(base, 1, "gwbench-probe", rpm_limit=1))[0]
        elif keys == "custom":
            key_list, probe = [f"sk-gwbench-{index}" for index in range(streams)], "sk-gwbench-probe"
        else:
            key_list = [LITELLM_MASTER_KEY] * streams
        self.results["litellm_keys"] = keys
        log(f"litellm listening on {port} (pid {child.pid}), keys: {keys}")
        return Target("litellm", f"{base}/chat/completions", key_list, child.pid, probe=probe,
                      database=self.litellm_db if keys == "virtual" else "")

    async def litellm_keys(self, base: str, streams: int, alias: str, **limits: int) -> list[str]:
        """One virtual key per stream, with a budget and limits as high as Parley's plan's (or `limits`)."""
        from bench.gateway_setup import BUDGET, MODEL

        body = {"max_budget": float(BUDGET), "budget_duration": "30d", **KEY_LIMITS, **limits, "models": [MODEL]}
        headers = {"Authorization": f"Bearer {LITELLM_MASTER_KEY}"}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
            async def one(index: int) -> str:
                async with session.post(f"{base}/key/generate", json={**body, "key_alias": f"{alias}{index}"},
                                        headers=headers) as response:
                    data = await response.json(content_type=None)
                    if response.status != 200:
                        raise RuntimeError(f"LiteLLM /key/generate answered {response.status}: {data}")
                    return data["key"]

            return [await one(i) for i in range(streams)]

    # Calls ---------------------------------------------------------------------------------------

    async def call(self, session: aiohttp.ClientSession, url: str, key: str) -> Reply:
        """One streaming call, read with a plain SSE reader: tokens are found in the raw event bytes
        (their text is ASCII digits, so JSON escaping does not touch it)."""
        reply = Reply(self.args.tokens)
        body = orjson.dumps({"model": "bench-gw", "stream": True, "stream_options": {"include_usage": True},
                             "messages": [{"role": "user", "content": CONTENT}], "max_tokens": self.args.tokens})
        reply.sent_ns = time.time_ns()
        async with asyncio.timeout(CALL_TIMEOUT):
            async with session.post(url, data=body, headers={"Content-Type": "application/json",
                                                            "Authorization": f"Bearer {key}"}) as response:
                if response.status != 200:
                    reply.problem = f"{response.status}: {(await response.read())[:300]!r}"
                    return reply
                buffer = b""
                async for chunk in response.content.iter_any():
                    now = time.time_ns()
                    buffer += chunk
                    *complete, buffer = buffer.split(b"\n\n")
                    for raw in complete:
                        if raw.startswith(b"data: [DONE]"):
                            reply.final = {"type": "done"}
                        elif TOKEN_RE_BYTES.search(raw):
                            self.tokens_received += reply.on_text(raw.decode(), now)
                        elif b'"error"' in raw:
                            reply.problem = f"stream error: {raw[:300]!r}"
        if reply.final is None and reply.problem is None:
            reply.problem = "no [DONE]"
        elif reply.lost:
            reply.problem = f"{reply.lost} tokens lost"
        return reply

    async def warm_up(self, target: Target) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=CALL_TIMEOUT)) as session:
            replies = await asyncio.gather(*(self.call(session, target.url, key) for key in target.keys[:3]))
            problems = [r.problem for r in replies if r.problem]
            if problems:
                raise RuntimeError(f"{target.name} warm-up failed: {problems[0]}")
            if target.pid is not None:  # a proxy that checks keys refuses an unknown one
                refused = await self.call(session, target.url, "sk-gwbench-unknown")
                if not (refused.problem or "").startswith(("401", "403")):
                    raise RuntimeError(f"{target.name} did not refuse an unknown key: {refused.problem}")
            if target.probe:  # the per-key limits are live: one request a minute, so the second is refused
                first = await self.call(session, target.url, target.probe)
                second = await self.call(session, target.url, target.probe)
                if first.problem or not (second.problem or "").startswith("429"):
                    raise RuntimeError(f"{target.name}'s limits are not live: {first.problem}, then {second.problem}")
                self.results.setdefault("limit_probes", {})[target.name] = second.problem[:200]
                log(f"{target.name} refused the second call of a key allowed one a minute: {second.problem[:120]}")

    async def run_phase(self, target: Target, n: int) -> dict[str, Any]:
        """N slots, spread over one reply's duration, each sending calls back to back."""
        a = self.args
        reply_seconds = a.tokens / a.rate if a.rate else 1.0
        measured: list[Reply] = []
        failures: list[str] = []
        calls_total = 0
        started_slots = done_slots = 0
        all_measured = asyncio.Event()
        marks: dict[str, int] = {}
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=None))
        deadline = time.monotonic() + reply_seconds * (a.rounds + 4) + 60

        def slot_done() -> None:
            nonlocal done_slots
            done_slots += 1
            if done_slots == n:
                marks["steady_to"] = time.time_ns()
                all_measured.set()

        async def slot(index: int) -> None:
            nonlocal calls_total, started_slots
            round_ = 0
            key = target.keys[index]
            await asyncio.sleep(index * reply_seconds / n)
            try:
                while (round_ <= a.rounds or not all_measured.is_set()) and time.monotonic() < deadline:
                    if round_ == 0:
                        started_slots += 1
                        if started_slots == n:
                            marks["steady_from"] = time.time_ns()
                            if a.profile and target.pid:
                                profiles.append(self.profile(target, n, reply_seconds * a.rounds * 0.8))
                    reply = await self.call(session, target.url, key)
                    calls_total += 1
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

        samples: list[tuple[int, float, float, float, int, int, dict[int, float]]] = []
        profiles: list[asyncio.Task[None]] = []
        backing = Backing(target, self.redis_pid)

        async def sampler() -> None:
            while True:
                samples.append((time.time_ns(), tree_cpu_seconds(target.pid) if target.pid else 0.0,
                                cpu_seconds(self.upstream.pid), cpu_seconds(os.getpid()), self.tokens_received,
                                tree_rss_kib(target.pid) if target.pid else 0, backing.sample()))
                await asyncio.sleep(0.25)

        sampling = asyncio.create_task(sampler())
        started = time.time_ns()
        try:
            results = await asyncio.gather(*(slot(i) for i in range(n)), return_exceptions=True)
        finally:
            sampling.cancel()
            await session.close()
        failures += [f"slot crashed: {type(r).__name__}: {r}" for r in results if isinstance(r, BaseException)]
        for task in profiles:
            await task
        ended = time.time_ns()
        lo, hi = marks.get("steady_from", started), marks.get("steady_to", ended)
        window = [s for s in samples if lo <= s[0] <= hi] or samples
        first, last = window[0], window[-1]
        seconds = (last[0] - first[0]) / 1e9 or 1e-9
        tokens = last[4] - first[4]
        relay = [us / 1000 for r in measured for us in r.relay_us]
        ttft = [r.ttft_ms for r in measured if r.ttft_ms is not None]
        proxy_cpu = last[1] - first[1]
        backing_cpu = Backing.spent(first[6], last[6])
        backing.close()
        return {
            "target": target.name,
            "streams": n,
            "calls_measured": len(measured),
            "calls_total": calls_total,
            "failures": len(failures),
            "failure_examples": failures[:5],
            "ttft_ms_p50": pct(ttft, 50),
            "ttft_ms_p99": pct(ttft, 99),
            "relay_ms_p50": pct(relay, 50),
            "relay_ms_p99": pct(relay, 99),
            "relay_ms_max": max(relay) if relay else None,
            "tokens_measured": len(relay),
            "lost": sum(r.lost for r in measured if r.final is not None),
            "duplicated": sum(r.duplicated for r in measured if r.final is not None),
            "window_s": seconds,
            "window_tokens": tokens,
            "proxy_cpu_s_per_1k_tokens": proxy_cpu / tokens * 1000 if target.pid and tokens else None,
            "proxy_cpu_pct": proxy_cpu / seconds * 100 if target.pid else None,
            "backing_cpu_s_per_1k_tokens": backing_cpu / tokens * 1000 if backing.used and tokens else None,
            "backing_cpu_pct": backing_cpu / seconds * 100 if backing.used else None,
            "proxy_peak_rss_mib": max(s[5] for s in samples) / 1024 if target.pid and samples else None,
            "upstream_cpu_pct": (last[2] - first[2]) / seconds * 100,
            "client_cpu_pct": (last[3] - first[3]) / seconds * 100,
            "duration_s": (ended - started) / 1e9,
        }

    def profile(self, target: Target, n: int, seconds: float) -> asyncio.Task[None]:
        """py-spy on the proxy's main process, every thread, waiting included (--idle): where a call's
        time goes when the process is not busy; collapsed stacks in --profile DIR/<target>-<n>.txt."""
        out = Path(self.args.profile) / f"{target.name}-{n}.txt"
        out.parent.mkdir(parents=True, exist_ok=True)

        async def run() -> None:
            process = await asyncio.create_subprocess_exec(
                self.args.py_spy, "record", "--pid", str(target.pid), "--duration", str(max(1, int(seconds))), "--rate", "100",
                "--nonblocking", "--idle", "--threads", "--format", "raw", "--output", str(out),
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
            await process.wait()

        return asyncio.create_task(run())

    # Checks after the run ------------------------------------------------------------------------

    def parley_ledger(self) -> dict[str, Any]:
        out = subprocess.run([sys.executable, "-m", "bench.gateway_setup", "--ledger"], cwd=ROOT, env=self.parley_env(),
                             check=True, capture_output=True, text=True).stdout
        return json.loads(out.strip().splitlines()[-1])

    def litellm_spend(self) -> dict[str, Any]:
        """What LiteLLM's database holds of the run: spend log rows and the keys' tracked spend."""
        import psycopg

        with psycopg.connect(f"{PG}/{self.litellm_db}") as db:
            logs = db.execute('SELECT count(*), coalesce(sum(spend), 0) FROM "LiteLLM_SpendLogs"').fetchone()
            keys = db.execute('SELECT count(*), coalesce(sum(spend), 0) FROM "LiteLLM_VerificationToken" '
                              'WHERE max_budget IS NOT NULL').fetchone()
        return {"spend_log_rows": logs[0], "spend_logged_usd": float(logs[1]), "keys_with_budget": keys[0],
                "keys_spend_usd": float(keys[1])}

    # The run ---------------------------------------------------------------------------------------

    def run(self) -> None:
        a = self.args
        streams = max(a.streams)
        self.start_upstream()
        targets = [Target("direct", f"{self.upstream_url}/chat/completions", ["none"] * streams, None)]
        if "parley" in a.targets:
            targets.append(self.start_parley(streams))
        if "litellm" in a.targets:
            targets.append(self.start_litellm(streams))
        self.results["machine"] = machine_facts()
        self.results["command"] = " ".join(["bench/gateway.py", *sys.argv[1:]])
        self.results["settings"] = {"tokens": a.tokens, "rate": a.rate, "rounds": a.rounds, "parley_db": a.parley_db,
                                    "litellm_version": litellm_version(a.litellm)}
        asyncio.run(self.measure(targets))
        if "parley" in a.targets:
            self.results["parley_ledger"] = self.parley_ledger()
            log(f"parley ledger: {self.results['parley_ledger']}")
        if self.results.get("litellm_keys") == "virtual":
            time.sleep(a.litellm_flush)  # LiteLLM writes spend in batches
            self.results["litellm_spend"] = self.litellm_spend()
            log(f"litellm spend: {self.results['litellm_spend']}")

    async def measure(self, targets: list[Target]) -> None:
        for target in targets:
            log(f"warming up {target.name}")
            await self.warm_up(target)
        for n in self.args.streams:
            for target in targets:
                log(f"phase: {target.name} x {n}")
                phase = await self.run_phase(target, n)
                self.results["phases"].append(phase)
                log(summary_line(phase))
                await asyncio.sleep(2.0)

    def server_errors(self) -> dict[str, Any]:
        """Errors the proxies logged (Parley at WARNING, LiteLLM at ERROR): their count and the first."""
        found: dict[str, Any] = {}
        for child in self.children:
            if child.name == "upstream" or child.name == "litellm-virtual" or not child.log_path.exists():
                continue  # the virtual keys' failed start is reported as the fallback's reason
            lines = child.log_path.read_text(errors="replace").splitlines()
            starts = [i for i, line in enumerate(lines) if " ERROR " in line or line.startswith("Traceback")]
            if starts:
                found[child.name] = {"errors": len(starts), "first": "\n".join(lines[starts[0]:starts[0] + 30])}
        return found

    def cleanup(self) -> None:
        for child in reversed(self.children):
            child.stop()
        self.results["server_errors"] = self.server_errors()
        for name in self.databases:
            if not self.args.keep:
                drop_database(name)
        remove_redis_keys(self.redis_url, self.prefix)
        if self.args.keep:
            log(f"kept {self.tmp} and the databases {self.databases}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


LITELLM_KEYS_SHORT = {"virtual": " (virtual keys, budgets)", "custom": " (key limits, no DB)", "master": " (no key limits)"}
LITELLM_KEYS_LONG = {
    "virtual": "a virtual key per stream (`/key/generate` with max_budget, rpm_limit, tpm_limit, max_parallel_requests), "
               "spend tracked in its PostgreSQL database.",
    "custom": "a key per stream answered by custom auth (bench/gateway_litellm_auth.py) with max_budget, rpm_limit, "
              "tpm_limit and max_parallel_requests, checked and enforced in memory on every call (common checks on); "
              "no database, so no spend written.",
    "master": "the master key for every stream: no budget, no per-key limit, no database.",
}


def litellm_version(venv: str) -> str:
    try:
        return subprocess.run([str(Path(venv) / "bin" / "python"), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
                              capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


def summary_line(p: dict[str, Any]) -> str:
    return (f"{p['target']:>7} N={p['streams']:<4} TTFT p50/p99 {fmt(p['ttft_ms_p50'])}/{fmt(p['ttft_ms_p99'])} ms  "
            f"relay p50/p99 {fmt(p['relay_ms_p50'])}/{fmt(p['relay_ms_p99'])} ms  lost {p['lost']} dup {p['duplicated']}  "
            f"failures {p['failures']} of {p['calls_total']}  cpu/1k {fmt(p['proxy_cpu_s_per_1k_tokens'], 3)} "
            f"(+{fmt(p['backing_cpu_s_per_1k_tokens'], 3)} db/redis)  "
            f"proxy {fmt(p['proxy_cpu_pct'], 0)}%  upstream {fmt(p['upstream_cpu_pct'], 0)}%  client {fmt(p['client_cpu_pct'], 0)}%")


def added(value: float | None, base: float | None) -> str:
    return "–" if value is None or base is None else f"{value - base:+.1f}"


def markdown(results: dict[str, Any]) -> str:
    phases = results["phases"]
    direct = {p["streams"]: p for p in phases if p["target"] == "direct"}
    out = ["| N | target | TTFT p50 / p99 (ms) | TTFT added p50 / p99 (ms) | relay p50 / p99 (ms) | relay added p50 / p99 (ms) | "
           "CPU-s per 1k tokens | + database / Redis | proxy CPU | peak RSS (MiB) | tokens/s | lost / dup | failed |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in phases:
        base = direct.get(p["streams"]) if p["target"] != "direct" else None
        ttft_added = relay_added = "–"
        if base:
            ttft_added = f"{added(p['ttft_ms_p50'], base['ttft_ms_p50'])} / {added(p['ttft_ms_p99'], base['ttft_ms_p99'])}"
            relay_added = f"{added(p['relay_ms_p50'], base['relay_ms_p50'])} / {added(p['relay_ms_p99'], base['relay_ms_p99'])}"
        name = p["target"]
        if name == "litellm":
            name += LITELLM_KEYS_SHORT[results.get("litellm_keys", "master")]
        out.append(
            f"| {p['streams']} | {name} | {fmt(p['ttft_ms_p50'])} / {fmt(p['ttft_ms_p99'])} | {ttft_added} | "
            f"{fmt(p['relay_ms_p50'])} / {fmt(p['relay_ms_p99'])} | {relay_added} | {fmt(p['proxy_cpu_s_per_1k_tokens'], 3)} | "
            f"{fmt(p['backing_cpu_s_per_1k_tokens'], 3)} | "
            f"{fmt(p['proxy_cpu_pct'], 0)}% | {fmt(p['proxy_peak_rss_mib'], 0)} | {fmt(p['window_tokens'] / p['window_s'], 0)} | "
            f"{p['lost']} / {p['duplicated']} | {p['failures']} of {p['calls_total']} |"
        )
    s = results["settings"]
    out.append("")
    out.append(f"{s['tokens']} tokens at {s['rate']:g} tokens/s per call, {s['rounds']} measured calls per stream; "
               f"Parley on {s['parley_db']}; LiteLLM {s['litellm_version']}.")
    if "litellm_keys" in results:
        out.append(f"LiteLLM's keys: {LITELLM_KEYS_LONG[results['litellm_keys']]}")
    if "litellm_fallback" in results:
        out.append(f"LiteLLM's virtual keys could not run here: {results['litellm_fallback']}")
    probes = results.get("limit_probes", {})
    if probes:
        out.append("Limits live: a key allowed one request a minute had its second call refused by "
                   + " and by ".join(f"{name} ({refusal.split(':')[0]})" for name, refusal in probes.items()) + ".")
    ledger = results.get("parley_ledger")
    if ledger:
        out.append(f"Parley's ledger: {ledger['rows']} gateway rows ({ledger['complete']} complete, {ledger['with_token']} "
                   f"with their token), ${ledger['cost_usd']} settled.")
    spend = results.get("litellm_spend")
    if spend:
        out.append(f"LiteLLM's database: {spend['spend_log_rows']} spend log rows (${spend['spend_logged_usd']:.4f}), "
                   f"{spend['keys_with_budget']} keys with a budget, ${spend['keys_spend_usd']:.4f} tracked against them.")
    return "\n".join(out)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", default="50,200", help="concurrent stream counts, comma-separated")
    parser.add_argument("--targets", default="parley,litellm", help="proxies measured beside the direct baseline")
    parser.add_argument("--tokens", type=int, default=200, help="tokens per call")
    parser.add_argument("--rate", type=float, default=50.0, help="tokens a second per call")
    parser.add_argument("--rounds", type=int, default=2, help="measured calls per stream")
    parser.add_argument("--parley-db", choices=["postgres", "sqlite"], default="postgres",
                        help="Parley's database: a fresh one on the PostgreSQL at 127.0.0.1:5432, or SQLite in the temp dir")
    parser.add_argument("--litellm", default="/work/litellm-venv", help="the virtualenv LiteLLM's proxy is installed in")
    parser.add_argument("--litellm-keys", choices=["auto", "virtual", "custom", "master"], default="auto",
                        help="virtual: its virtual keys with budgets and limits (needs its database, so Prisma's engines); "
                        "custom: the same limits through custom auth, no database; master: neither; auto: virtual, else custom")
    parser.add_argument("--litellm-flush", type=float, default=15.0, help="seconds to wait for LiteLLM's batched spend writes")
    parser.add_argument("--nice", type=int, default=0, help="scheduling priority of every process started (e.g. -10; root)")
    parser.add_argument("--profile", default="", help="record py-spy profiles of each proxy (all threads, idle too) into this dir")
    parser.add_argument("--py-spy", default=shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy"),
                        help="the py-spy executable for --profile")
    parser.add_argument("--out", default="", help="write the results as JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs) and the databases")
    args = parser.parse_args(argv)
    args.streams = [int(n) for n in args.streams.split(",") if n]
    args.targets = [t for t in args.targets.split(",") if t]
    if set(args.targets) - {"parley", "litellm"}:
        parser.error("--targets takes parley and/or litellm")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    os.chdir(ROOT)
    bench = Bench(args)
    if args.nice:
        os.setpriority(os.PRIO_PROCESS, os.getpid(), args.nice)
    try:
        bench.run()
    finally:
        bench.cleanup()
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(bench.results, indent=2, default=str))
    print(markdown(bench.results))
    for name, errors in bench.results.get("server_errors", {}).items():
        print(f"\n{name} logged {errors['errors']} errors; the first:\n{errors['first']}")


if __name__ == "__main__":
    main()
