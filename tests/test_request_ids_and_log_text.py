"""The request id's rules, its way into other threads and contexts, the JSON line's shape, and
users' text in logs: a hash until the site's switch is on."""

import asyncio
import contextvars
import json
import logging
import sys
import threading

import pytest
from channels.db import database_sync_to_async

from accounts.models import SiteSettings
from observability import context, logs
from parley import deferred


@pytest.mark.parametrize("incoming", ["abc", "0f" * 16, "Root=1-67891233-abcdef012345678912345678", "a.b_c:d+e/f-g", "x" * 128])
def test_a_well_formed_incoming_id_is_kept(incoming):
    assert context.accept(incoming) == incoming
    assert context.accept(incoming.encode()) == incoming


@pytest.mark.parametrize("incoming", [None, "", "x" * 129, "two words", "<b>", "-leading", "line\nbreak", "é", b"\xff"])
def test_a_bad_incoming_id_is_replaced_by_a_new_one(incoming):
    replaced = context.accept(incoming)
    assert replaced != incoming and len(replaced) == 32 and int(replaced, 16) >= 0
    assert context.accept(incoming) != replaced  # a new one each time


def test_a_fresh_context_carries_the_request_id_and_user_and_nothing_else():
    other = contextvars.ContextVar("other", default="unset")

    def inside() -> None:
        context.bind("req-1", 7)
        other.set("the request's")
        fresh = context.fresh()
        assert fresh.run(lambda: (context.request_id.get(), context.user_id.get(), other.get())) == ("req-1", 7, "unset")

    contextvars.Context().run(inside)


@pytest.mark.django_db(transaction=True)
def test_work_after_a_commit_on_the_deferred_threads_keeps_the_request_id():
    seen: list[tuple[str, str]] = []

    def register() -> None:
        deferred.after_commit(lambda: seen.append((context.request_id.get(), threading.current_thread().name)), "test")

    async def request() -> None:
        context.bind("req-deferred")
        await database_sync_to_async(register)()

    contextvars.Context().run(asyncio.run, request())
    deadline = 50
    while not seen and deadline:
        threading.Event().wait(0.05)
        deadline -= 1
    assert seen and seen[0][0] == "req-deferred" and seen[0][1].startswith(deferred.THREAD_NAME)


def test_a_json_line_has_the_context_and_the_extra_fields():
    def inside() -> str:
        context.bind("req-json", 3)
        record = logging.LogRecord("chat.test", logging.WARNING, __file__, 1, "Reply %s: %s", (5, "ok"), None)
        record.status = 201
        try:
            raise ValueError("boom")
        except ValueError:
            record.exc_info = sys.exc_info()
        logs.ContextFilter().filter(record)
        return logs.JsonFormatter().format(record)

    line = json.loads(contextvars.Context().run(inside))
    assert line["message"] == "Reply 5: ok" and line["level"] == "WARNING" and line["logger"] == "chat.test"
    assert (line["request_id"], line["user_id"], line["status"]) == ("req-json", 3, 201)
    assert "ValueError: boom" in line["exception"] and line["time"].endswith("Z")
    assert "trace_id" not in line  # no span here: traces are off in this process


@pytest.mark.django_db
def test_text_is_logged_as_a_hash_until_the_admin_switch_is_on(caplog):
    secret = "my passport number is 12345"
    log = logging.getLogger("chat.test")
    with caplog.at_level(logging.INFO, logger="chat.test"):
        log.info("text %s", logs.text(secret))
    assert secret not in caplog.text and logs.digest(secret) in caplog.text
    assert logs.digest(secret) == logs.digest(secret) != logs.digest(secret + ".")
    assert logs.digest(secret).endswith(f"({len(secret)} chars)")

    site = SiteSettings.current()
    site.log_message_text = True
    site.save()  # this process reads the switch again at once
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="chat.test"):
        log.info("text %s", logs.text(secret))
    assert f"text {secret}" in caplog.text

    site.log_message_text = False
    site.save()
    assert str(logs.text(secret)) == logs.digest(secret)
