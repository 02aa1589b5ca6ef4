import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

# Concurrent test runs may share one Redis; their message ids overlap, so their keys and queues must not.
os.environ.setdefault("PARLEY_KEY_PREFIX", f"parley-test-{os.getpid()}")
os.environ.setdefault("PARLEY_CELERY_QUEUE", os.environ["PARLEY_KEY_PREFIX"])
# On RabbitMQ a queue outlives its run: each run's queues (the session's and the ones tests name)
# go once unused for five minutes, even when the run was killed.
os.environ.setdefault("PARLEY_CELERY_QUEUE_EXPIRES_SECONDS", "300")
# A fast hasher here and in every process a test starts (they read passwords the test stored).
os.environ.setdefault("PARLEY_TEST_FAST_PASSWORD_HASHER", "1")

from parley.redis_clients import sync_client_for
from tests.live import LiveApp, child_env, logs_written_since


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """A failed test's report ends with what its live processes logged meanwhile.
    In CI nothing is skipped: a test that cannot run (no browser, no Node.js, no npm package)
    is a failure there, so that a missing part never passes for a working one."""
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed and (logs := logs_written_since(call.start)):
        report.sections.append(("live process logs", logs))
    if report.skipped and os.environ.get("PARLEY_NO_SKIPS") == "1" and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.longrepr = f"skipped in CI, which runs every test: {reason}"


@pytest.fixture(scope="session", autouse=True)
def _close_the_shared_database_thread_connection(django_db_setup: None) -> Iterator[None]:
    """Async code reaches the database through one shared thread, whose connection persists; close it
    before the test database is dropped (PostgreSQL refuses to drop a database still in use)."""
    yield
    from asgiref.sync import SyncToAsync
    from django.db import connections

    SyncToAsync.single_thread_executor.submit(connections.close_all).result(timeout=10)


@pytest.fixture(scope="session", autouse=True)
def _flush_retries_a_deadlock() -> Iterator[None]:
    """A test's end empties the tables with one TRUNCATE. On PostgreSQL that can deadlock with the
    live server's worker still finishing the test's last reply or title (row locks taken in another
    order); PostgreSQL then aborts the TRUNCATE, which is safe to run again."""
    import time

    from django.core.management.base import CommandError
    from django.core.management.commands import flush

    handle = flush.Command.handle

    def handle_retrying(self, *args, **options):  # type: ignore[no-untyped-def]
        for attempt in range(5):
            try:
                return handle(self, *args, **options)
            except CommandError as error:
                if "deadlock detected" not in str(error.__cause__) or attempt == 4:
                    raise
                time.sleep(0.2 * (attempt + 1))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(flush.Command, "handle", handle_retrying)
        yield


@pytest.fixture(autouse=True)
def _fresh_limits() -> None:
    """User ids restart with every test database: limits cached for one test's user must not apply to the next's."""
    from accounts.plans import forget_cached_limits
    from billing.admission import forget_seen_costs
    from routing.router import forget_cached_rules
    from shadows.sampling import forget_configs

    forget_cached_limits()
    forget_seen_costs()
    forget_configs()  # config ids restart too
    forget_cached_rules()


@pytest.fixture(autouse=True)
def _catalogue(request: pytest.FixtureRequest) -> None:
    """transactional_db empties tables between tests; put the seeded model catalogue back."""
    used = {"db", "transactional_db"} & set(request.fixturenames)
    if used:
        request.getfixturevalue(used.pop())
        from accounts.models import Plan
        from accounts.plans import seed_plans
        from chat.catalogue import seed
        from chat.models import ChatModel
        from routing.models import seed_auto

        seed(ChatModel)
        seed_auto(ChatModel)
        seed_plans(Plan)


_cleanup_clients: dict[str, redis.Redis] = {}


def _cleanup_client(url: str) -> redis.Redis:
    """One client per URL for the whole run: a cluster client learns the slots on its first use."""
    if url not in _cleanup_clients:
        _cleanup_clients[url] = sync_client_for(url)
    return _cleanup_clients[url]


@pytest.fixture(autouse=True)
def _clean_event_logs(request: pytest.FixtureRequest) -> Iterator[None]:
    """Message ids restart with every test database; their Redis keys must not outlive them."""
    yield
    # A module's `pytestmark = pytest.mark.django_db` gives its tests the database without naming `db`.
    if {"db", "transactional_db"} & set(request.fixturenames) or request.node.get_closest_marker("django_db"):
        from django.conf import settings

        client = _cleanup_client(settings.REDIS_URL)
        prefix = settings.PARLEY_KEY_PREFIX
        # Message, user (quota counters), conversation (titles) and run ids restart with every test
        # database; failed sign-ins and sign-ups from 127.0.0.1 must not carry over; breakers' forced
        # modes are seeded from the database, which every test empties. One SCAN (per node).
        families = tuple(f"{prefix}:{family}:".encode() for family in ("msg", "quota", "auth", "title", "run", "breaker"))
        keys = [key for key in client.scan_iter(f"{prefix}:*", count=1000) if key.startswith(families)]
        if keys:
            client.delete(*keys)


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    from django.conf import settings

    client = sync_client_for(settings.REDIS_URL)
    yield client
    client.close()


@pytest.fixture
def alice(django_user_model):
    return django_user_model.objects.create_user("alice", password="alice-password-123")


@pytest.fixture
def bob(django_user_model):
    return django_user_model.objects.create_user("bob", password="bob-password-123")


@pytest.fixture
def alice_client(alice):
    """A test client signed in as alice (pages, and the API by her session)."""
    from django.test import Client

    client = Client()
    client.force_login(alice)
    return client


@pytest.fixture(scope="session")
def live_app(django_db_setup, django_db_blocker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApp]:
    """Real daphne + Celery worker (with beat) serving the test database."""
    with django_db_blocker.unblock():
        # A fast heartbeat, but the reaper at its old pace: the session's worker reaps against the
        # database every test flushes, and a flush that meets a reap's transaction can deadlock.
        env = child_env(PARLEY_HEARTBEAT_SECONDS="1", PARLEY_HEARTBEAT_TTL="3", PARLEY_REAP_SECONDS="15")
    app = LiveApp(tmp_path_factory.mktemp("live"), env)
    try:
        app.start_daphne()
        app.start_worker()
        yield app
    finally:
        app.stop()


@pytest.fixture
def live_factory(django_db_setup, django_db_blocker, tmp_path: Path) -> Iterator[callable]:
    """Separate processes a test may kill, with extra environment."""
    apps: list[LiveApp] = []

    def make(**extra: str) -> LiveApp:
        with django_db_blocker.unblock():
            app = LiveApp(tmp_path / f"app{len(apps)}", child_env(**extra))
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.stop()



@pytest.fixture(autouse=True, scope="session")
def _isolated_keys() -> None:
    """Settings may have loaded before this module set the environment; make both agree."""
    from django.conf import settings

    settings.PARLEY_KEY_PREFIX = os.environ["PARLEY_KEY_PREFIX"]
    settings.CELERY_TASK_DEFAULT_QUEUE = os.environ["PARLEY_CELERY_QUEUE"]
    settings.PARLEY_CELERY_QUEUE_EXPIRES_SECONDS = int(os.environ["PARLEY_CELERY_QUEUE_EXPIRES_SECONDS"])
    if os.environ["PARLEY_TEST_FAST_PASSWORD_HASHER"] == "1":
        from django.contrib.auth.hashers import get_hashers, get_hashers_by_algorithm

        settings.PASSWORD_HASHERS = settings.TEST_PASSWORD_HASHERS
        get_hashers.cache_clear()
        get_hashers_by_algorithm.cache_clear()
