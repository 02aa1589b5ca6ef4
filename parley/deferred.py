"""Work that follows a commit (a settle, a Celery publish, a stop flag), kept off the database
thread that every async door shares.

The WebSocket consumer, the API's views and the reply generations reach the ORM through one
thread (asgiref's single-thread executor, behind `database_sync_to_async` and Django's `a*`
methods), and `transaction.on_commit` runs its callbacks on the thread that committed: a settle
waiting on a slow Redis, or a publish on a slow broker, would hold up every stream's database hop
in the process. Here the commit only hands the work to a few threads of this module's own, and the
caller gets a future to wait on where order matters (a reply's final event waits for its settle).

Elsewhere (a Celery task, a management command, a page's own request thread, a test) the work runs
at the commit, as `on_commit` would: no other stream waits on that thread, and its callers (the
reaper, a title) read right after the commit what the work wrote.
"""

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from asgiref.sync import SyncToAsync
from django.db import connections, transaction

from observability import context

logger = logging.getLogger(__name__)

# Each job is a Redis round trip or a broker publish, each bounded by its client's timeout: a few
# threads keep one hung call from holding up the rest. The queue is not bounded: dropping a settle
# would leave its reservation counted, and refusing one would block the committing thread again.
THREADS = 4
THREAD_NAME = "parley-deferred"

_own = threading.local()


def _mark_own_thread() -> None:
    _own.is_deferred = True


_pool = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix=THREAD_NAME, initializer=_mark_own_thread)


def after_commit(fn: Callable[[], object], what: str) -> Future[None]:
    """Run `fn` once the current transaction commits (at once outside one), off the shared
    database thread when registered on it. `what` names the work in the log if it fails.

    The future is done once `fn` has run, whether it failed or not (a failure is logged, never
    raised). Wait on it only after the commit: a rollback drops `fn` and the future never ends."""
    done: Future[None] = Future()
    fn = context.carry(fn)  # the request id and trace of the work that asked, not of the thread that runs it
    transaction.on_commit(lambda: _start(fn, what, done))
    return done


def soon(fn: Callable[[], object], what: str) -> Future[None]:
    """Run `fn` now, as `after_commit` would at a commit: a deferred job uses it so that what it
    asks of a broker does not hold up the job's own waiters."""
    done: Future[None] = Future()
    _start(context.carry(fn), what, done)
    return done


def on_shared_database_thread() -> bool:
    """True in code that database_sync_to_async or Django's `a*` methods run on their shared thread.

    asgiref marks the caller's context while it uses that thread (its guard against a deadlock) and
    runs the code in a copy of that context. Asking the executor for its threads would miss its
    first call, which starts the thread before recording it. tests/test_deferred.py fails if this
    mark is ever gone."""
    return SyncToAsync.deadlock_context.get(False)


def _start(fn: Callable[[], object], what: str, done: Future[None]) -> None:
    if on_shared_database_thread() or getattr(_own, "is_deferred", False):
        _pool.submit(_run_on_own_thread, fn, what, done)
    else:
        _run(fn, what, done)


def _run_on_own_thread(fn: Callable[[], object], what: str, done: Future[None]) -> None:
    try:
        _run(fn, what, done)
    finally:
        # The few jobs that read the database (a cost-alert check) open a connection of this
        # thread's own; closed at once, none outlives the job (nor the test database).
        connections.close_all()


def _run(fn: Callable[[], object], what: str, done: Future[None]) -> None:
    # A waiter that gave up (a cancelled reply) has cancelled the future, never the work.
    waited_on = done.set_running_or_notify_cancel()
    try:
        fn()
    except Exception:
        logger.exception("Deferred %s failed", what)
    finally:
        if waited_on:
            done.set_result(None)
