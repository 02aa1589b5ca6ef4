"""The reaper: replies whose process stopped heart-beating become `interrupted`, their text kept."""

from datetime import timedelta

import orjson
import pytest
from django.utils import timezone

from chat.models import ChatModel, Conversation, Message
from chat.reaper import reap_interrupted
from streaming import events
from streaming.keys import events_key, heartbeat_key

pytestmark = pytest.mark.django_db


@pytest.fixture
def conversation(alice):
    return Conversation.objects.create(owner=alice, model=ChatModel.objects.get(name="parley-demo"))


def active_reply(conversation, generator: str, checkpoint: str = "", age: int = 60) -> Message:
    return Message.objects.create(
        conversation=conversation, role="assistant", status="streaming", content=checkpoint,
        generator=generator, created=timezone.now() - timedelta(seconds=age),
    )


def log_deltas(client, message_id: int, pieces: list[str]) -> None:
    offset = 0
    for piece in pieces:
        offset += len(piece)
        event = events.delta(message_id, offset, piece)
        client.xadd(events_key(message_id), {"e": orjson.dumps(event)}, id=event["cursor"])


def test_dead_generation_is_marked_interrupted_with_the_logged_text(conversation, redis_client):
    reply = active_reply(conversation, "dead-1", checkpoint="Hello")
    log_deltas(redis_client, reply.pk, ["Hello", ", wor", "ld"])
    assert reap_interrupted(redis_client) == [reply.pk]
    reply.refresh_from_db()
    assert reply.status == "interrupted"
    assert reply.content == "Hello, world"
    assert reply.last_cursor == "12-1"
    final = orjson.loads(redis_client.xrange(events_key(reply.pk))[-1][1][b"e"])
    assert final["type"] == "done" and final["status"] == "interrupted" and final["cursor"] == "12-1"
    assert reap_interrupted(redis_client) == []


def test_a_checkpoint_longer_than_an_expired_log_wins(conversation, redis_client):
    reply = active_reply(conversation, "dead-2", checkpoint="Kept from the database")
    assert reap_interrupted(redis_client) == [reply.pk]
    reply.refresh_from_db()
    assert reply.content == "Kept from the database"
    entries = [orjson.loads(fields[b"e"]) for _, fields in redis_client.xrange(events_key(reply.pk))]
    assert [e["type"] for e in entries] == ["delta", "done"]
    assert entries[0]["text"] == "Kept from the database"


def test_live_generators_and_young_replies_are_left_alone(conversation, redis_client):
    redis_client.set(heartbeat_key("alive-1"), "1", ex=30)
    alive = active_reply(conversation, "alive-1")
    young = active_reply(conversation, "dead-3", age=0)
    assert reap_interrupted(redis_client) == []
    alive.refresh_from_db()
    young.refresh_from_db()
    assert alive.status == young.status == "streaming"


@pytest.mark.django_db(transaction=True)
async def test_stop_ends_a_reply_whose_process_died_at_once(alice, redis_client):
    from channels.db import database_sync_to_async

    from chat.replies import attach, stop_message

    conversation = await database_sync_to_async(Conversation.objects.create)(
        owner=alice, model=await ChatModel.objects.aget(name="parley-demo")
    )
    reply = await database_sync_to_async(active_reply)(conversation, "dead-4", checkpoint="Half a")
    await database_sync_to_async(log_deltas)(redis_client, reply.pk, ["Half a", " thought"])
    assert (await stop_message(alice, reply.pk))["status"] == "stopped"
    stored = await Message.objects.aget(pk=reply.pk)
    assert stored.status == "stopped" and stored.content == "Half a thought" and stored.error_text == ""
    seen = [orjson.loads(e.payload) async for batch in attach(alice, reply.pk, "6-0") for e in batch]
    assert [e["type"] for e in seen] == ["delta", "done"] and seen[0]["text"] == " thought"
    assert seen[-1]["status"] == "stopped"
