"""A reply the reaper ended while its process was in fact alive (its heartbeat lost with Redis's
data, say) keeps the reaper's end: the process's own final write neither overwrites it nor bills
the call a second time."""

import time

import httpx
import orjson
import pytest
from django.conf import settings

from accounts.models import ApiToken
from billing.models import UsageRecord
from chat.models import Message
from chat.reaper import end_orphan
from parley.redis_clients import sync_client_for
from streaming.keys import events_key

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]


def final_statuses(client, reply_id: int) -> list[str]:
    entries = [orjson.loads(fields[b"e"]) for _, fields in client.xrange(events_key(reply_id))]
    return [entry["status"] for entry in entries if entry["type"] == "done"]


def test_a_reply_reaped_while_it_ran_is_billed_once_and_stays_as_the_reaper_left_it(live_factory, alice):
    app = live_factory()
    server = app.start_daphne()
    headers = {"Authorization": f"Bearer {ApiToken.issue(alice, 'reaped')[1]}"}
    conversation = httpx.post(f"{server.url}/api/conversations/", json={}, headers=headers).json()["id"]
    sent = httpx.post(
        f"{server.url}/api/conversations/{conversation}/messages", json={"content": "long /words 80 /slow 40"}, headers=headers
    )
    reply_id = sent.json()["assistant_message"]["id"]
    client = sync_client_for(settings.REDIS_URL)
    deadline = time.monotonic() + 20
    while not client.xlen(events_key(reply_id)):
        assert time.monotonic() < deadline, "the reply never started"
        time.sleep(0.05)
    # What a reap finding no heartbeat does, while the generation goes on.
    assert end_orphan(client, reply_id, Message.objects.get(pk=reply_id).content)
    reaped = Message.objects.get(pk=reply_id)
    assert reaped.status == "interrupted"
    # The generating process ends its reply in its own time: its final event reaches the log.
    while "complete" not in final_statuses(client, reply_id):
        assert time.monotonic() < deadline, final_statuses(client, reply_id)
        time.sleep(0.1)
    time.sleep(0.5)  # its final write and settle, after the event
    after = Message.objects.get(pk=reply_id)
    assert (after.status, after.content) == ("interrupted", reaped.content)
    assert UsageRecord.objects.filter(message_id=reply_id).count() == 1
    client.close()
