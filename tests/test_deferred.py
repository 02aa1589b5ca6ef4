"""Work deferred to a commit runs off the database thread that every async door shares, and at
the commit on any other thread."""

import asyncio
import logging
import threading

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.db import transaction

from parley import deferred

pytestmark = pytest.mark.django_db(transaction=True)

PROMPT_SECONDS = 2.0


def test_the_shared_database_thread_is_told_apart_from_every_other():
    async def where() -> tuple[bool, bool, bool]:
        return (
            await database_sync_to_async(deferred.on_shared_database_thread)(),
            await sync_to_async(deferred.on_shared_database_thread)(),  # Django's a* methods
            await asyncio.to_thread(deferred.on_shared_database_thread),
        )

    assert asyncio.run(where()) == (True, True, False)
    assert not deferred.on_shared_database_thread()


async def test_committed_on_the_shared_database_thread_the_work_runs_on_a_deferred_thread():
    ran: list[threading.Thread] = []

    def commit() -> object:
        with transaction.atomic():
            return deferred.after_commit(lambda: ran.append(threading.current_thread()), "a recorded job")

    done = await database_sync_to_async(commit)()
    await asyncio.wait_for(asyncio.wrap_future(done), PROMPT_SECONDS)
    shared = await database_sync_to_async(threading.current_thread)()
    assert ran[0] is not shared and ran[0].name.startswith(deferred.THREAD_NAME)


def test_in_a_worker_or_a_command_deferred_work_runs_at_the_commit_on_its_thread():
    ran: list[threading.Thread] = []
    with transaction.atomic():
        done = deferred.after_commit(lambda: ran.append(threading.current_thread()), "a recorded job")
        assert ran == [] and not done.done()
    assert ran == [threading.current_thread()] and done.done()


def test_a_rolled_back_transaction_runs_no_deferred_work():
    ran: list[int] = []
    with pytest.raises(RuntimeError), transaction.atomic():
        deferred.after_commit(lambda: ran.append(1), "a dropped job")
        raise RuntimeError("roll back")
    assert ran == []


async def test_a_failing_deferred_job_is_logged_and_still_ends_its_future(caplog):
    def commit() -> object:
        with transaction.atomic():
            return deferred.after_commit(lambda: 1 / 0, "division job")

    with caplog.at_level(logging.ERROR, logger="parley.deferred"):
        done = await database_sync_to_async(commit)()
        await asyncio.wait_for(asyncio.wrap_future(done), PROMPT_SECONDS)
    assert "Deferred division job failed" in caplog.text and "ZeroDivisionError" in caplog.text
