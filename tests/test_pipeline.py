"""The durable pipeline against a real Redis: cursors, exactly-once delivery, stop, disconnect, bounded writes."""

import asyncio
import random
import re

import pytest
from channels.db import database_sync_to_async
from django.db import connection

from accounts.models import Plan
from chat import replies
from chat.models import ChatModel, Message
from streaming.process import event_log
from tests.helpers import connect, receive_until_final

pytestmark = pytest.mark.django_db(transaction=True)


async def read_from(user, message_id: int, after: str) -> tuple[str, dict]:
    text = []
    final = None
    async for batch in replies.attach(user, message_id, after):
        for entry in batch:
            import orjson

            event = orjson.loads(entry.payload)
            if event["type"] == "delta":
                text.append(event["text"])
            else:
                final = event
    return "".join(text), final


async def test_attaching_at_random_cursors_yields_exactly_the_rest_once_in_order(alice):
    event = await replies.send_message(alice, None, "count for me /words 400 /slow 2")
    reply_id = event["assistant_message"]["id"]
    rng = random.Random(1234)
    readers = []
    seen_cursors = ["", "0", "0-0"]
    for _ in range(25):
        await asyncio.sleep(rng.uniform(0, 0.08))
        log = event_log().logs.get(reply_id)
        if log and log.entries:
            seen_cursors.append(f"{log.entries[rng.randrange(len(log.entries))].id[0]}-0")
        cursor = rng.choice(seen_cursors + [str(rng.randrange(0, 3000))])
        readers.append((cursor, asyncio.create_task(read_from(alice, reply_id, cursor))))
    results = [(cursor, await task) for cursor, task in readers]
    stored = await Message.objects.aget(pk=reply_id)
    assert stored.status == "complete"
    assert len(stored.content.split()) == 400
    for cursor, (text, final) in results:
        offset = int(cursor.split("-")[0] or 0)
        assert text == stored.content[offset:], f"reader at {cursor!r} got a different text"
        assert final["type"] == "done" and final["status"] == "complete"
    # After the end, readers are served the stored text from any cursor too.
    for cursor in ["", "17", "120-0", f"{len(stored.content)}-1"]:
        text, final = await read_from(alice, reply_id, cursor)
        assert text == stored.content[int(cursor.split("-")[0] or 0):]
        assert final["status"] == "complete"


async def test_stop_from_another_connection_stops_and_keeps_the_partial_text(alice):
    sender = await connect(alice)
    other = await connect(alice)
    await sender.connect()
    await other.connect()
    await sender.send_json_to({"type": "send", "conversation": None, "content": "long one /words 2000 /slow 20"})
    created = await sender.receive_json_from(timeout=5)
    reply_id = created["assistant_message"]["id"]
    first = await sender.receive_json_from(timeout=5)
    assert first["type"] == "delta"
    notice = await other.receive_json_from(timeout=5)
    assert notice["type"] == "message" and notice["assistant_message"]["id"] == reply_id  # the other tab is told
    await other.send_json_to({"type": "stop", "message": reply_id, "ref": "s"})
    ack = await other.receive_json_from(timeout=5)
    assert ack["type"] == "stopping"
    deltas, final = await receive_until_final(sender, reply_id)
    assert final["type"] == "done" and final["status"] == "stopped"
    stored = await Message.objects.aget(pk=reply_id)
    assert stored.status == "stopped"
    assert stored.content == first["text"] + "".join(d["text"] for d in deltas)
    assert 0 < len(stored.content.split()) < 2000
    await other.send_json_to({"type": "stop", "message": reply_id})
    again = await other.receive_json_from(timeout=5)
    assert again["code"] == "already_finished"
    await sender.disconnect()
    await other.disconnect()


async def test_disconnecting_does_not_stop_the_generation(alice):
    communicator = await connect(alice)
    await communicator.connect()
    await communicator.send_json_to({"type": "send", "conversation": None, "content": "go on /words 120 /slow 3"})
    created = await communicator.receive_json_from(timeout=5)
    await communicator.disconnect()
    reply_id = created["assistant_message"]["id"]
    for _ in range(200):
        stored = await Message.objects.aget(pk=reply_id)
        if stored.status not in Message.ACTIVE:
            break
        await asyncio.sleep(0.05)
    assert stored.status == "complete"
    assert len(stored.content.split()) == 120


async def test_database_writes_per_reply_do_not_grow_with_its_length(alice, settings):
    # Checkpoints come at 0.25, 0.75, 1.75 s…: a busy machine may stretch the short reply past the
    # first, never (by far) past the second.
    settings.PARLEY_CHECKPOINT_FIRST_SECONDS = 0.25
    settings.PARLEY_MAX_OUTPUT_TOKENS = 4000  # room for a 3,000-word reply
    await ChatModel.objects.filter(name="parley-demo").aupdate(max_output_tokens=4000)
    await Plan.objects.filter(name="Free").aupdate(max_output_tokens=None)
    updates: list[str] = []

    def count(execute, sql, params, many, context):
        if re.match(r'\s*UPDATE "chat_message"', sql):
            updates.append(sql)
        return execute(sql, params, many, context)

    @database_sync_to_async
    def install() -> None:
        # Replies write through the one thread-sensitive executor thread; hook its connection.
        connection.execute_wrappers.append(count)

    @database_sync_to_async
    def uninstall() -> None:
        connection.execute_wrappers.remove(count)

    async def writes_for(content: str) -> tuple[int, Message]:
        updates.clear()
        event = await replies.send_message(alice, None, content)
        await read_from(alice, event["assistant_message"]["id"], "")
        return len(updates), await Message.objects.aget(pk=event["assistant_message"]["id"])

    await install()
    try:
        short_writes, short = await writes_for("short /words 5")
        long_writes, long = await writes_for("long /words 3000 /slow 1")
    finally:
        await uninstall()
    assert len(long.content.split()) == 3000 and len(short.content.split()) == 5
    assert 1 <= short_writes <= 2  # the final write, and a checkpoint if it outlasted the first interval
    assert long_writes <= 1 + settings.PARLEY_CHECKPOINTS_MAX
    assert long_writes > short_writes  # the long reply did checkpoint, within the bound


async def test_a_checkpoint_marks_the_reply_streaming_with_its_text_so_far(alice, settings):
    settings.PARLEY_CHECKPOINT_FIRST_SECONDS = 0.1
    event = await replies.send_message(alice, None, "checkpoint me /words 400 /slow 10")
    reply_id = event["assistant_message"]["id"]
    assert event["assistant_message"]["status"] == "queued"
    stored = await Message.objects.aget(pk=reply_id)
    for _ in range(100):
        stored = await Message.objects.aget(pk=reply_id)
        if stored.content:
            break
        await asyncio.sleep(0.05)
    assert stored.status == "streaming"
    assert stored.ttft_ms is not None and stored.ttft_ms >= 0
    assert 0 < len(stored.content.split()) < 400
    await replies.stop_message(alice, reply_id)
    await read_from(alice, reply_id, "")


async def test_admission_control_refuses_fast_when_full(alice, settings):
    settings.PARLEY_MAX_GENERATIONS = 2
    first = await replies.send_message(alice, None, "one /words 200 /slow 10")
    second = await replies.send_message(alice, None, "two /words 200 /slow 10")
    with pytest.raises(replies.ActionError) as refused:
        await replies.send_message(alice, None, "three")
    assert refused.value.code == "busy"
    assert refused.value.retry_after
    assert await Message.objects.filter(role="user").acount() == 2
    for event in (first, second):
        await replies.stop_message(alice, event["assistant_message"]["id"])
        await read_from(alice, event["assistant_message"]["id"], "")


async def test_a_second_send_into_a_busy_conversation_is_refused(alice):
    first = await replies.send_message(alice, None, "one /words 200 /slow 10")
    with pytest.raises(replies.ActionError) as refused:
        await replies.send_message(alice, first["conversation"]["id"], "two")
    assert refused.value.code == "conversation_busy"
    await replies.stop_message(alice, first["assistant_message"]["id"])
    _, final = await read_from(alice, first["assistant_message"]["id"], "")
    assert final["status"] == "stopped"


async def test_deleting_a_conversation_stops_its_reply(alice):
    from chat.actions import delete_conversation, get_conversation_for

    event = await replies.send_message(alice, None, "endless /words 3000 /slow 20")
    reply_id = event["assistant_message"]["id"]
    conversation = await database_sync_to_async(get_conversation_for)(alice, event["conversation"]["id"])
    await asyncio.sleep(0.2)
    await database_sync_to_async(delete_conversation)(conversation)
    log = event_log().logs[reply_id]
    for _ in range(100):
        if log.finished:
            break
        await asyncio.sleep(0.05)
    assert log.finished and log.final_event["status"] == "stopped"
    assert not await Message.objects.filter(pk=reply_id).aexists()
