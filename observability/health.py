"""Readiness: can this process serve? The database answers, Redis answers, the Celery broker is
reachable and every migration is applied.

The checks run at once, each on a thread of this module's own with its own short timeout
(PARLEY_PROBE_TIMEOUT_SECONDS), so a hung Redis or database makes the probe answer "not ready" in
about that time instead of hanging it, and never ties up the threads requests share. A check that
is still hanging keeps its thread; the next probe's check of the same part then times out too,
which is the truth.
"""

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urlsplit

import redis
from django.conf import settings
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from parley.redis_clients import sentinel_refusal, sync_client_for

# One thread per check, and room for a few hung ones.
_threads = ThreadPoolExecutor(max_workers=8, thread_name_prefix="parley-readyz")
_migrated = False  # once every migration is applied it stays so for the process's life
_clients: dict[tuple[str, float], redis.Redis] = {}


@dataclass(frozen=True, slots=True)
class Result:
    name: str
    ok: bool
    ms: float
    error: str = ""

    def as_dict(self) -> dict[str, object]:
        shown: dict[str, object] = {"ok": self.ok, "ms": self.ms}
        if self.error:
            shown["error"] = self.error
        return shown


def check_database() -> None:
    connection.close_if_unusable_or_obsolete()
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def check_migrations() -> None:
    global _migrated
    if _migrated:
        return
    executor = MigrationExecutor(connection)
    pending = executor.migration_plan(executor.loader.graph.leaf_nodes())
    if pending:
        names = ", ".join(f"{migration.app_label}.{migration.name}" for migration, _ in pending[:5])
        raise RuntimeError(f"{len(pending)} not applied: {names}")
    _migrated = True


def check_redis() -> None:
    _redis_client(settings.REDIS_URL).ping()


def check_broker() -> None:
    url = settings.CELERY_BROKER_URL
    if url.split(":", 1)[0] in {"redis", "rediss", "unix"}:
        _redis_client(url).ping()
        return
    from kombu import Connection

    with Connection(url, connect_timeout=settings.PARLEY_PROBE_TIMEOUT_SECONDS) as broker:
        broker.ensure_connection(max_retries=1, interval_start=0, timeout=settings.PARLEY_PROBE_TIMEOUT_SECONDS)


CHECKS: dict[str, Callable[[], None]] = {
    "database": check_database,
    "migrations": check_migrations,
    "redis": check_redis,
    "broker": check_broker,
}


async def readiness() -> tuple[bool, dict[str, dict[str, object]]]:
    """Every check's result by name, and whether all passed."""
    results = await asyncio.gather(*(_timed(name, check) for name, check in CHECKS.items()))
    return all(result.ok for result in results), {result.name: result.as_dict() for result in results}


async def _timed(name: str, check: Callable[[], None]) -> Result:
    timeout = settings.PARLEY_PROBE_TIMEOUT_SECONDS
    started = time.perf_counter()
    try:
        future = asyncio.get_running_loop().run_in_executor(_threads, check)
        await asyncio.wait_for(future, timeout)
    except TimeoutError:
        return Result(name, False, _ms_since(started), f"no answer within {timeout:g} s")
    except Exception as error:  # any failure of the part is the answer, not a crash of the probe
        return Result(name, False, _ms_since(started), _describe(error))
    return Result(name, True, _ms_since(started))


def _redis_client(url: str) -> redis.Redis:
    timeout = settings.PARLEY_PROBE_TIMEOUT_SECONDS
    client = _clients.get((url, timeout))
    if client is None:
        # A cluster's or a Sentinel's URL too (REDIS_URL); a Redis broker's is a plain one.
        client = _clients[(url, timeout)] = sync_client_for(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    return client


def _describe(error: Exception) -> str:
    if refusal := sentinel_refusal(error):
        return refusal
    # Never a URL: it may carry a password.
    text = str(error).splitlines()[0] if str(error) else ""
    for url in {settings.REDIS_URL, settings.CELERY_BROKER_URL}:
        if urlsplit(url).password:
            text = text.replace(url, "<url>")
    return f"{type(error).__name__}: {text}"[:300] if text else type(error).__name__


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)

