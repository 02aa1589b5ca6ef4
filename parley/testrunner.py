"""`bin/parley test [pytest args]`: the whole test suite on embedded defaults.

Starts an embedded Redis unless REDIS_URL is set (with PARLEY_TEST_REDIS=cluster, an embedded
3-primary Redis Cluster whatever REDIS_URL says, and a plain Redis for Celery's broker), runs `python -m pytest` with the given arguments
in that environment and returns pytest's exit code. "No tests collected" (pytest's 5) counts as a
failure: the suite is never empty. With CELERY_BROKER_URL=amqp://..., RabbitMQ must answer first.

In CI (CI set) browser tests must run rather than skip: Chromium must be present at
PARLEY_CHROMIUM (default /usr/bin/chromium), and PARLEY_REQUIRE_BROWSER=1 is exported so that the
tests fail instead of skipping when they cannot start it; PARLEY_NO_SKIPS=1 makes any other
skipped test (the protocol clients' Node.js tests, say) a failure too.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
DEFAULT_CHROMIUM = "/usr/bin/chromium"
NO_TESTS_COLLECTED = 5


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in {"", "0", "false", "no", "off"}


def say(message: str) -> None:
    print(f"parley test: {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    env = dict(os.environ)

    if in_ci():
        chromium = env.get("PARLEY_CHROMIUM") or DEFAULT_CHROMIUM
        if not (os.path.isfile(chromium) and os.access(chromium, os.X_OK)):
            say(
                f"CI is set but Chromium is missing at {chromium}. Browser tests must not be skipped in CI: "
                "install Debian's chromium (apt-get install -y chromium) or set PARLEY_CHROMIUM=/path/to/chromium."
            )
            return 1
        env["PARLEY_CHROMIUM"] = chromium
        env["PARLEY_REQUIRE_BROWSER"] = "1"
        # Nor any other test: one that cannot run (Node.js or an npm client missing) fails.
        env["PARLEY_NO_SKIPS"] = "1"

    redis = None
    servers: list = []
    wanted = env.get("PARLEY_TEST_REDIS", "").strip().lower()
    if wanted not in {"", "single", "cluster"}:
        say(f"PARLEY_TEST_REDIS={wanted!r} must be 'single' (the default) or 'cluster'.")
        return 1
    if wanted == "cluster":
        from parley.embedded_redis import EmbeddedRedisError, start_cluster
        from parley.embedded_redis import start as start_redis

        try:
            servers.append(start_cluster())
            # Celery's broker is one plain Redis beside the cluster (settings refuse a cluster there).
            servers.append(start_redis())
        except EmbeddedRedisError as exc:
            for server in servers:
                server.stop()
            say(str(exc))
            return 1
        env["REDIS_URL"], env["CELERY_BROKER_URL"] = servers[0].url, servers[1].url
        say(f"embedded 3-primary Redis Cluster at {servers[0].url}; Celery's broker at {servers[1].url}")
    elif not env.get("REDIS_URL"):
        from parley.embedded_redis import EmbeddedRedisError
        from parley.embedded_redis import start as start_redis

        try:
            redis = start_redis()
        except EmbeddedRedisError as exc:
            say(str(exc))
            return 1
        env["REDIS_URL"] = redis.url
        say(f"embedded Redis at {redis.url}")
    else:
        from parley.devserver import redact
        from parley.embedded_redis import unreachable_reason

        problem = unreachable_reason(env["REDIS_URL"])
        if problem:
            say(f"REDIS_URL={redact(env['REDIS_URL'])} is not reachable ({problem}); start it, or unset REDIS_URL to use an embedded Redis.")
            return 1
        say(f"Redis from REDIS_URL: {redact(env['REDIS_URL'])}")

    broker = env.get("CELERY_BROKER_URL", "")
    if broker.startswith("amqp"):
        from parley.devserver import redact

        problem = broker_unreachable_reason(broker)
        if problem:
            say(f"CELERY_BROKER_URL={redact(broker)} is not reachable ({problem}); start RabbitMQ "
                "(rabbitmq-server -detached), or unset CELERY_BROKER_URL to use Redis as the broker.")
            if redis is not None:
                redis.stop()
            return 1
        say(f"Celery broker from CELERY_BROKER_URL: {redact(broker)}")

    # pytest runs in our process group, so a terminal's Ctrl-C reaches it directly; we only wait
    # for it to finish and then stop Redis. SIGTERM is passed on.
    process = None

    def forward(signum: int, _frame: object) -> None:
        if process is not None and process.poll() is None:
            process.send_signal(signum)

    previous_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
    previous_term = signal.signal(signal.SIGTERM, forward)
    previous_hup = signal.signal(signal.SIGHUP, forward)
    try:
        process = subprocess.Popen([sys.executable, "-m", "pytest", *args], cwd=BASE_DIR, env=env)
        code = process.wait()
    finally:
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        signal.signal(signal.SIGINT, previous_int)
        signal.signal(signal.SIGTERM, previous_term)
        signal.signal(signal.SIGHUP, previous_hup)
        if redis is not None:
            redis.stop()
        for server in servers:
            server.stop()

    if code == NO_TESTS_COLLECTED:
        say("no tests ran (pytest exit code 5); the suite must never be empty, so this is a failure.")
        return 1
    return code


def broker_unreachable_reason(url: str, timeout: float = 5.0) -> str | None:
    """None if the RabbitMQ at `url` takes a connection, else why not."""
    from kombu import Connection

    try:
        with Connection(url, connect_timeout=timeout) as connection:
            connection.ensure_connection(max_retries=1)
    except Exception as exc:  # refused, authentication, bad vhost, ...
        return f"{type(exc).__name__}: {exc}"
    return None


if __name__ == "__main__":
    sys.exit(main())
