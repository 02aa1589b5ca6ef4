"""Work deferred to a commit (settles, Celery publishes, alert checks, stop flags) runs off the
database thread that every async door shares, so a slow Redis or broker holds up no other stream;
a reply's final event still follows its settle."""

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal

import pytest
import redis
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.db import transaction
from django.test import AsyncClient

from accounts.models import Plan
from billing import alerts, quotas
from chat import replies
from chat.actions import delete_conversation, get_conversation_for
from billing.models import UsageRecord
from chat.models import ChatModel, Conversation
from streaming.keys import stop_key
from streaming.process import event_log
from parley import deferred
from parley.celery import app as celery_app
from tests.helpers import reply_events

pytestmark = pytest.mark.django_db(transaction=True)

# How long a database hop may take while a deferred job is stuck: far below the stuck job's wait.
PROMPT_SECONDS = 2.0
STUCK_SECONDS = 15.0


class Boundary:
    """Where deferred work meets the network: the threads it ran on, and a gate a test may close."""

    def __init__(self) -> None:
        self.threads: dict[str, threading.Thread] = {}
        self.reached = threading.Event()
        self.gate = threading.Event()
        self.gate.set()

    def pass_through(self, what: str) -> None:
        self.threads.setdefault(what, threading.current_thread())
        self.reached.set()
        self.gate.wait(STUCK_SECONDS)

    async def wait_reached(self) -> bool:
        return await asyncio.to_thread(self.reached.wait, STUCK_SECONDS)


@pytest.fixture
def settle_at_redis(monkeypatch: pytest.MonkeyPatch) -> Boundary:
    """The settle's script call, in the redis client every sync caller shares."""
    boundary = Boundary()
    settle_sha = quotas._SHAS[quotas.SETTLE]
    evalsha = redis.Redis.evalsha

    def slow_evalsha(self: redis.Redis, sha: str, *args: object) -> object:
        if sha == settle_sha:
            boundary.pass_through("settle")
        return evalsha(self, sha, *args)

    monkeypatch.setattr(redis.Redis, "evalsha", slow_evalsha)
    return boundary


@pytest.fixture
def broker(monkeypatch: pytest.MonkeyPatch) -> Boundary:
    """Celery's publish: recorded by task name, and not sent (no worker runs these tests' tasks)."""
    boundary = Boundary()

    def slow_send_task(name: str, args: tuple = (), **options: object) -> None:
        boundary.pass_through(name.removeprefix("chat.tasks."))

    monkeypatch.setattr(celery_app, "send_task", slow_send_task)
    return boundary


@pytest.fixture
def priced(db: None) -> ChatModel:
    """A paid model served by the offline demo provider, under a $1 monthly budget."""
    Plan.objects.filter(name="Free").update(cost_per_month=Decimal("1.00"), tokens_per_day=1_000_000)
    return ChatModel.objects.create(
        name="priced-demo", label="Priced demo", provider="demo", context_window=8192, max_output_tokens=1024,
        input_price_per_million=Decimal("10"), output_price_per_million=Decimal("10"),
    )


@pytest.fixture
def gates_opened(settle_at_redis: Boundary, broker: Boundary) -> Iterator[None]:
    """A failing test must not leave a deferred thread, or the shared database thread, stuck."""
    yield
    settle_at_redis.gate.set()
    broker.gate.set()


async def shared_database_thread() -> threading.Thread:
    return await database_sync_to_async(threading.current_thread)()


async def prompt_database_hop() -> float:
    """Seconds one database hop through the shared thread takes, from another coroutine."""
    started = time.monotonic()
    await asyncio.wait_for(Conversation.objects.acount(), PROMPT_SECONDS)
    return time.monotonic() - started


async def until(condition: Callable[[], bool], seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    return condition()


async def test_settles_title_and_alert_requests_and_stop_flags_run_off_the_shared_database_thread(
    priced, alice, settle_at_redis, broker, monkeypatch
):
    monkeypatch.setattr(alerts, "_asked", {})
    monkeypatch.setattr(alerts, "_sent", set())
    await database_sync_to_async(UsageRecord.objects.create)(
        user=alice, kind="reply", provider="demo", model="priced-demo", cost_usd=Decimal("0.60"), outcome="complete"
    )
    # A priced reply past half the budget: its settle, the conversation's title, a cost-alert check.
    event = await replies.send_message(alice, None, "hello /words 3", "priced-demo")
    assert (await reply_events(alice, event["assistant_message"]["id"]))[-1]["type"] == "done"
    # A conversation deleted while its reply runs: the stop flag.
    running = await replies.send_message(alice, None, "endless /words 3000 /slow 20")
    stopping, stop_flags, setter = stop_key(running["assistant_message"]["id"]), Boundary(), redis.Redis.set

    def recording_set(self: redis.Redis, name: object, *args: object, **kwargs: object) -> object:
        if name == stopping:
            stop_flags.pass_through("stop flag")
        return setter(self, name, *args, **kwargs)

    monkeypatch.setattr(redis.Redis, "set", recording_set)
    conversation = await database_sync_to_async(get_conversation_for)(alice, running["conversation"]["id"])
    log = event_log().logs[running["assistant_message"]["id"]]
    await database_sync_to_async(delete_conversation)(conversation)
    assert await until(lambda: log.finished)

    boundaries = (settle_at_redis, broker, stop_flags)
    assert await until(lambda: sum(len(b.threads) for b in boundaries) >= 4)
    threads = {what: thread for b in boundaries for what, thread in b.threads.items()}
    assert set(threads) == {"settle", "generate_title", "check_cost_alert", "stop flag"}
    shared = await shared_database_thread()
    assert {what: thread.name for what, thread in threads.items() if thread is shared} == {}
    assert all(thread.name.startswith(deferred.THREAD_NAME) for thread in threads.values()), threads


async def test_a_settle_stuck_at_redis_holds_up_only_its_own_reply(priced, alice, settle_at_redis, gates_opened):
    settle_at_redis.gate.clear()
    event = await replies.send_message(alice, None, "count /words 30", "priced-demo")
    reply_id = event["assistant_message"]["id"]
    final = asyncio.create_task(reply_events(alice, reply_id))
    assert await settle_at_redis.wait_reached()
    assert await prompt_database_hop() < PROMPT_SECONDS  # another stream's hop, while the settle waits on Redis
    await asyncio.sleep(0.3)
    assert not final.done()  # the final event waits for the settle
    settle_at_redis.gate.set()
    assert (await asyncio.wait_for(final, 10))[-1]["type"] == "done"

    # What a client reads on the final event: the meter has the reply's tokens, not its reservation.
    client = AsyncClient()
    await client.aforce_login(alice)
    meter = {a["name"]: a for a in (await client.get("/api/usage/")).json()["allowances"]}
    entry = await UsageRecord.objects.aget(message_id=reply_id)
    assert meter["tokens_per_day"]["used"] == entry.total_tokens
    assert meter["cost_per_month"]["used"] == pytest.approx(float(entry.cost_usd))


async def test_a_title_request_stuck_at_the_broker_holds_up_no_database_hop_and_no_final_event(
    alice, broker, gates_opened
):
    broker.gate.clear()
    event = await replies.send_message(alice, None, "hello /words 3")  # a first reply asks for a title
    assert await broker.wait_reached()
    assert await prompt_database_hop() < PROMPT_SECONDS
    events = await asyncio.wait_for(reply_events(alice, event["assistant_message"]["id"]), PROMPT_SECONDS)
    assert events[-1]["type"] == "done"
    assert "generate_title" in broker.threads


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

