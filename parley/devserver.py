"""`bin/parley run`: everything Parley needs in one terminal, on embedded defaults.

Starts an embedded Redis unless REDIS_URL is set, runs the Procfile's `release` entry (migrations)
and collects static files, then supervises its `web` (daphne), `worker` and `beat` entries, the same
commands the container image runs (parley/procfile.py): HOST, PORT and REDIS_URL reach them through
the environment, and the virtualenv's `python` and `celery` come first on PATH. Each child's output is
prefixed with its name. Ctrl-C or SIGTERM stops everything in order and exits 0; a child that dies
on its own stops everything and exits non-zero.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from observability import multiproc
from parley import procfile

BASE_DIR = Path(__file__).resolve().parent.parent
STOP_TIMEOUT = 10.0
WORKER_READY_WAIT = 30.0  # seconds the banner waits for the worker before showing anyway

_print_lock = threading.Lock()
_COLOURS = {"redis": "31", "setup": "33", "web": "36", "worker": "35", "beat": "34", "parley": "32"}


def say(name: str, line: str, stream=None) -> None:
    stream = stream or sys.stdout
    label = f"{name:>6} |"
    if stream.isatty() and not os.environ.get("NO_COLOR"):
        label = f"\033[{_COLOURS.get(name, '0')}m{label}\033[0m"
    with _print_lock:
        stream.write(f"{label} {line}\n")
        stream.flush()


def fail(message: str) -> None:
    for line in message.splitlines() or [""]:
        say("parley", line, sys.stderr)


def redact(url: str) -> str:
    """A URL fit for a banner: the password replaced by ***."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(unparseable URL)"
    if parts.password:
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        netloc = f"{parts.username or ''}:***@{host}"
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def port_in_use(host: str, port: int) -> bool:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        return False
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError:
            return True
    return False


def accepting(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class Child:
    """A supervised process in its own session, its output forwarded line by line with a prefix."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], ready_text: str = "") -> None:
        from parley.embedded_redis import child_preexec

        self.name = name
        self.ready_text = ready_text
        self.ready = threading.Event()  # set once a line containing ready_text is seen
        self.process = subprocess.Popen(
            args,
            cwd=BASE_DIR,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=child_preexec(),  # noqa: PLW1509
        )
        self.reader = threading.Thread(target=self._forward, name=f"{name}-output", daemon=True)
        self.reader.start()

    def _forward(self) -> None:
        assert self.process.stdout is not None
        for raw in iter(self.process.stdout.readline, b""):
            line = raw.decode(errors="replace").rstrip("\r\n")
            say(self.name, line)
            if self.ready_text and self.ready_text in line:
                self.ready.set()

    def poll(self) -> int | None:
        return self.process.poll()

    def signal_group(self, signum: int) -> None:
        try:
            os.killpg(self.process.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass

    def terminate(self) -> None:
        if self.process.poll() is None:
            try:
                self.process.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass

    def finish(self, deadline: float) -> None:
        """Wait for the child until the deadline, then kill whatever is left of its process group."""
        try:
            self.process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            say("parley", f"{self.name} did not stop within {STOP_TIMEOUT:.0f}s; killing it")
        # Also reaps helpers that outlived the leader (Celery's pool processes, say).
        self.signal_group(signal.SIGKILL)
        self.process.wait()
        self.reader.join(timeout=2)


def run_step(name: str, args: list[str], env: dict[str, str], stopping: threading.Event) -> int | None:
    """Run a one-off command to completion; None if a stop request interrupted it."""
    child = Child(name, args, env)
    while child.poll() is None:
        if stopping.wait(0.1):
            child.terminate()
            child.finish(time.monotonic() + STOP_TIMEOUT)
            return None
    child.finish(time.monotonic())
    return child.poll()


def describe_settings() -> dict[str, str]:
    """Read what the banner shows from the settings module itself; fails on a bad environment."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "parley.settings")
    from django.conf import settings

    database = settings.DATABASES["default"]
    if database["ENGINE"].endswith("sqlite3"):
        db = f"SQLite at {database['NAME']}"
    else:
        db = redact(settings.DATABASE_URL)
    from providers import BY_NAME
    from providers.endpoints import configured_endpoints

    # Each endpoint's models are listed by the worker at its start, then every PARLEY_MODELS_REFRESH_SECONDS.
    shown_list = [f"{endpoint.name} ({BY_NAME[endpoint.kind].label}) at {endpoint.base_url}" for endpoint in configured_endpoints()]
    if settings.PARLEY_DEMO_MODEL:
        shown_list.append("demo model (offline, no keys)")
    shown = ", ".join(shown_list) or "none (set OPENAI_API_KEY or ANTHROPIC_API_KEY)"
    return {
        "db": db,
        "providers": shown,
        "var": str(settings.VAR_DIR),
        "debug": "on" if settings.DEBUG else "off",
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in {"-h", "--help"}:
        print(__doc__)
        return 0
    host = os.environ.get("HOST", "127.0.0.1") or "127.0.0.1"
    try:
        port = int(os.environ.get("PORT", "8000") or "8000")
    except ValueError:
        fail(f"PORT={os.environ['PORT']!r} is not a port number.")
        return 2

    stopping = threading.Event()
    reason: list[str] = []

    def on_signal(signum: int, _frame: object) -> None:
        reason.append(signal.Signals(signum).name)
        stopping.set()

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, on_signal)

    if port_in_use(host, port):
        fail(f"Port {port} on {host} is already in use (another Parley or server?). Stop it or choose another port: PORT=8001 bin/parley run")
        return 1

    redis = None
    children: list[Child] = []
    exit_code = 0
    try:
        # Links in emails (cost alerts) point here unless told otherwise.
        shown = "127.0.0.1" if host in {"0.0.0.0", "::"} else f"[{host}]" if ":" in host else host
        os.environ.setdefault("PARLEY_PUBLIC_URL", f"http://{shown}:{port}")
        if not os.environ.get("REDIS_URL"):
            from parley.embedded_redis import EmbeddedRedisError
            from parley.embedded_redis import start as start_redis

            try:
                redis = start_redis()
            except EmbeddedRedisError as exc:
                fail(str(exc))
                return 1
            os.environ["REDIS_URL"] = redis.url
            redis_label = f"embedded redis-server (pid {redis.pid}) at {redis.url}"
        else:
            from parley.embedded_redis import unreachable_reason

            redis_label = redact(os.environ["REDIS_URL"])
            problem = unreachable_reason(os.environ["REDIS_URL"])
            if problem:
                fail(f"REDIS_URL={redis_label} is not reachable ({problem}). Start that Redis, or unset REDIS_URL to use an embedded one.")
                return 1

        try:
            info = describe_settings()
        except Exception as exc:
            fail(f"Configuration error: {exc}")
            return 1
        var = Path(info["var"])
        var.mkdir(parents=True, exist_ok=True)

        # PARLEY_LOCAL_RUN: the worker leaves out its warning about running as root (parley/celery.py).
        env = dict(
            os.environ,
            PYTHONUNBUFFERED="1",
            DJANGO_SETTINGS_MODULE="parley.settings",
            PARLEY_LOCAL_RUN="1",
            HOST=host,
            PORT=str(port),
            PARLEY_VAR_DIR=str(var),
            # The Procfile says `python` and `celery`: this virtualenv's.
            PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        )
        # Every process of the run writes its metrics here, emptied first (observability/multiproc.py).
        env[multiproc.ENV] = multiproc.fresh_dir(Path(os.environ.get(multiproc.ENV) or var / "prometheus"))
        try:
            commands = {name: procfile.command(name, env) for name in ("release", "web", "worker", "beat")}
        except procfile.ProcfileError as exc:
            fail(str(exc))
            return 1
        say("setup", "Migrating the database and collecting static files ...")
        collectstatic = [sys.executable, "manage.py", "collectstatic", "--noinput", "--verbosity", "0"]
        for step in (commands["release"], collectstatic):
            code = run_step("setup", step, env, stopping)
            if code is None:
                return 0
            if code != 0:
                fail(f"`{' '.join(step)}` failed with exit code {code}.")
                return 1
        if stopping.is_set():
            return 0

        children.append(Child("web", commands["web"], env))
        worker = Child("worker", commands["worker"], env, ready_text=" ready.")
        children.append(worker)
        children.append(Child("beat", commands["beat"], env))
        started = time.monotonic()

        display_host = f"[{host}]" if ":" in host else host
        url = f"http://{'127.0.0.1' if host in {'0.0.0.0', '::'} else display_host}:{port}/"
        announced = False
        while not stopping.wait(0.2):
            for child in children:
                code = child.poll()
                if code is not None and not stopping.is_set():
                    how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
                    fail(f"{child.name} {how} unexpectedly; stopping Parley.")
                    reason.append(f"{child.name} stopped")
                    exit_code = 1
                    stopping.set()
            if redis is not None and not redis.alive() and not stopping.is_set():
                fail("The embedded redis-server exited unexpectedly; stopping Parley.\n" + redis.log_tail())
                reason.append("redis stopped")
                exit_code = 1
                stopping.set()
            # The banner comes last, once the worker is ready too, so that it is what stays in view.
            worker_settled = worker.ready.is_set() or time.monotonic() - started > WORKER_READY_WAIT
            if (
                not announced and not stopping.is_set() and worker_settled
                and accepting(host if host not in {"0.0.0.0", "::"} else "127.0.0.1", port)
            ):
                announced = True
                banner = [
                    "",
                    "=" * 64,
                    f"  Parley is running at {url}",
                    f"  Redis:     {redis_label}",
                    f"  Database:  {info['db']}",
                    f"  Providers: {info['providers']}",
                    f"  Debug:     {info['debug']}; data in {info['var']}",
                    "  Create an admin: .venv/bin/python manage.py createsuperuser",
                    "  Ctrl-C to stop.",
                    "=" * 64,
                    "",
                ]
                for line in banner:
                    say("parley", line)
        return exit_code
    finally:
        if children:
            say("parley", f"Stopping ({reason[0] if reason else 'shutdown'}) ...")
        for child in children:
            child.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT
        for child in children:
            child.finish(deadline)
        if redis is not None:
            redis.stop()
        if children:
            say("parley", "Stopped.")


if __name__ == "__main__":
    sys.exit(main())
