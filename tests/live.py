"""Real processes for tests: daphne and a Celery worker against the test database and Redis."""

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from django.db import connection

from observability.multiproc import fresh_dir

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_database_url() -> str:
    """The URL of the test database pytest-django created, for child processes."""
    settings_dict = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{settings_dict['NAME']}"
    user = quote(settings_dict.get("USER") or "")
    password = quote(settings_dict.get("PASSWORD") or "")
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    host = settings_dict.get("HOST") or "127.0.0.1"
    port = settings_dict.get("PORT") or 5432
    return f"postgres://{auth}{host}:{port}/{settings_dict['NAME']}"


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"DATABASE_URL": test_database_url(), "DJANGO_SETTINGS_MODULE": "parley.settings", "PYTHONUNBUFFERED": "1"})
    # Tests edit plans between steps, and user ids restart with every test database.
    env.setdefault("PARLEY_LIMITS_CACHE_SECONDS", "0")
    env.update(extra)
    return env


@dataclass
class LiveProcess:
    """A server or worker in a process of its own, its output in `log_path`."""

    name: str
    args: list[str]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen | None = None
    port: int | None = None

    def start(self) -> "LiveProcess":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(self.args, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        STARTED.append(self)
        return self

    def wait_for_port(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited early:\n{self.log_path.read_text()[-3000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port or 0), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not listen on {self.port}:\n{self.log_path.read_text()[-3000:]}")

    def wait_for_log(self, text: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log_path.exists() and text in self.log_path.read_text(errors="replace"):
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} never logged {text!r}:\n{self.log_path.read_text()[-3000:]}")

    def kill(self) -> None:
        """Dies at once, like a crashed host: no cleanup runs."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class LiveApp:
    """A running Parley: one or more daphne processes and a Celery worker."""

    tmp: Path
    env: dict[str, str]
    servers: list[LiveProcess] = field(default_factory=list)
    worker: LiveProcess | None = None  # the last one started
    workers: list[LiveProcess] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.servers[0].url

    def __post_init__(self) -> None:
        # The processes of one app share a metrics directory, so any daphne serves their sum.
        self.env = {**self.env, "PROMETHEUS_MULTIPROC_DIR": fresh_dir(self.tmp / "prometheus")}

    def start_daphne(self, port: int | None = None, host: str = "127.0.0.1") -> LiveProcess:
        """A daphne process; on `port` to stand in for one that was stopped (a restart), on `host`
        to be reached at another address than loopback."""
        port = port or free_port()
        server = LiveProcess(
            f"daphne-{port}",
            [sys.executable, "-m", "parley.serve", "-b", host, "-p", str(port), "parley.asgi:application"],
            self.env,
            self.tmp / f"daphne-{port}.log",
            port=port,
        ).start()
        server.wait_for_port()
        self.servers.append(server)
        return server

    def start_worker(self, name: str = "celery") -> LiveProcess:
        """A Celery worker (with beat); give a second one its own `name` for its log and schedule."""
        self.worker = LiveProcess(
            name,
            [sys.executable, "-m", "celery", "-A", "parley", "worker", "-B", "-l", "info", "--concurrency", "1",
             # A node name of its own: on RabbitMQ a worker's control queue (its node name) is
             # exclusive, so a second worker of the same name, in this run or another, cannot start.
             "-n", f"{name}-{uuid.uuid4().hex[:8]}@%h", "--without-gossip", "--without-mingle", "--without-heartbeat",
             "-s", str(self.tmp / f"{name}-beat-schedule")],
            self.env,
            self.tmp / f"{name}.log",
        ).start()
        self.worker.wait_for_log("ready.", timeout=60)
        self.workers.append(self.worker)
        return self.worker

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
        for worker in self.workers:
            worker.stop()


STARTED: list[LiveProcess] = []


def logs_written_since(when: float, lines: int = 30) -> str:
    """The last lines of every live process's log written to since `when` (a time.time()): what a
    failed test's processes were doing, in its report."""
    tails = []
    for process in STARTED:
        path = process.log_path
        if path.exists() and path.stat().st_mtime >= when:
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            tails.append(f"--- {process.name} ({path})\n" + "\n".join(line[:400] for line in tail))
    return "\n".join(tails)


def wait_until(check: Callable[[], object], timeout: float = 30.0, what: str = "") -> object:
    """The first truthy value `check` returns within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@contextmanager
def fake_openai_server(log_dir: Path, tokens: int) -> Iterator[str]:
    """tests/fakes/openai_server.py in a process of its own, answering `tokens` tokens a reply; its base URL."""
    port = free_port()
    server = LiveProcess(
        "fake-openai", [sys.executable, "-m", "tests.fakes.openai_server", "--port", str(port), "--tokens", str(tokens)],
        {"PYTHONUNBUFFERED": "1", "PATH": "/usr/bin:/bin"}, log_dir / "fake.log", port=port,
    ).start()
    server.wait_for_port()
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.stop()
