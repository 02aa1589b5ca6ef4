"""The chat WebSocket through WebsocketCommunicator: the full send → deltas → done path and bad input."""

import pytest
from channels.db import database_sync_to_async

from chat.models import Conversation, Message
from tests.helpers import connect, handshake, receive_type, receive_until_final

pytestmark = pytest.mark.django_db(transaction=True)


async def test_anonymous_handshake_is_refused():
    communicator = await connect()
    connected, code = await handshake(communicator)
    assert not connected
    assert code == 4401


async def test_foreign_origin_is_refused(alice):
    communicator = await connect(alice, origin=b"http://evil.example")
    connected, code = await handshake(communicator)
    assert not connected
    assert code == 4403


async def test_handshake_without_origin_needs_a_token(alice):
    communicator = await connect(alice, origin=None)
    connected, _ = await handshake(communicator)
    assert not connected


async def test_send_streams_a_reply_and_stores_it(alice):
    communicator = await connect(alice)
    assert (await communicator.connect())[0]
    await communicator.send_json_to({"type": "send", "conversation": None, "content": "Hello there /words 60", "ref": 7})
    created = await communicator.receive_json_from(timeout=5)
    assert created["type"] == "message"
    assert created["ref"] == 7
    assert created["user_message"]["content"] == "Hello there /words 60"
    assert created["assistant_message"]["status"] == "queued"
    reply_id = created["assistant_message"]["id"]
    deltas, final = await receive_until_final(communicator, reply_id)
    assert final["type"] == "done" and final["status"] == "complete"
    text = "".join(delta["text"] for delta in deltas)
    assert len(text.split()) == 60
    assert [int(d["cursor"].split("-")[0]) for d in deltas] == sorted({int(d["cursor"].split("-")[0]) for d in deltas})
    stored = await Message.objects.aget(pk=reply_id)
    assert stored.content == text
    assert stored.status == "complete"
    assert stored.completion_tokens and stored.ttft_ms is not None
    assert final["cursor"] == f"{len(text)}-1"
    await communicator.disconnect()


async def test_send_into_existing_conversation_uses_history(alice):
    conversation = await database_sync_to_async(Conversation.objects.create)(
        owner=alice, model_id=(await _demo_model_id())
    )
    communicator = await connect(alice)
    await communicator.connect()
    await communicator.send_json_to({"type": "send", "conversation": conversation.pk, "content": "first /words 3"})
    created = await communicator.receive_json_from(timeout=5)
    await receive_until_final(communicator, created["assistant_message"]["id"])
    await communicator.send_json_to({"type": "send", "conversation": conversation.pk, "content": "second /words 3"})
    second = await receive_type(communicator, "message")
    assert second["conversation"]["id"] == conversation.pk
    assert second["user_message"]["parent"] == created["assistant_message"]["id"]
    await receive_until_final(communicator, second["assistant_message"]["id"])
    assert await Message.objects.filter(conversation=conversation).acount() == 4
    await communicator.disconnect()


async def _demo_model_id() -> int:
    from chat.models import ChatModel

    return (await ChatModel.objects.aget(name="parley-demo")).pk


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("not json", "invalid_json"),
        ("[1, 2]", "invalid_frame"),
        ('{"type": "dance"}', "invalid_frame"),
        ('{"content": "no type"}', "invalid_frame"),
        ('{"type": "send", "conversation": null, "content": ""}', "empty_message"),
        ('{"type": "send", "conversation": null, "content": "   \\n "}', "empty_message"),
        ('{"type": "send", "conversation": null, "content": 12}', "invalid_input"),
        ('{"type": "send", "conversation": null, "content": "hi", "model": "no-such-model"}', "unknown_model"),
        ('{"type": "send", "conversation": 999999, "content": "hi"}', "not_found"),
        ('{"type": "send", "conversation": "abc", "content": "hi"}', "not_found"),
        ('{"type": "send", "conversation": 100000000000000000000000000000, "content": "hi"}', "not_found"),
        ('{"type": "send", "conversation": -1, "content": "hi"}', "not_found"),
        ('{"type": "send", "conversation": 1.0, "content": "hi"}', "not_found"),
        ('{"type": "send", "conversation": true, "content": "hi"}', "not_found"),
        ('{"type": "stop", "message": 100000000000000000000000000000}', "not_found"),
        ('{"type": "attach", "message": 999999, "after": ""}', "not_found"),
        ('{"type": "attach", "message": "1", "after": ""}', "invalid_input"),
        ('{"type": "attach", "message": 1, "after": "garbage"}', "invalid_input"),
        ('{"type": "stop", "message": 999999}', "not_found"),
        ('{"type": "stop"}', "not_found"),
    ],
)
async def test_bad_frames_get_a_clear_error_and_the_socket_stays_usable(alice, frame, code):
    communicator = await connect(alice)
    await communicator.connect()
    await communicator.send_to(text_data=frame)
    error = await communicator.receive_json_from(timeout=5)
    assert error["type"] == "error"
    assert error["code"] == code
    assert error["text"]
    assert error["message"] is None
    await communicator.send_json_to({"type": "send", "conversation": None, "content": "still here /words 2"})
    created = await communicator.receive_json_from(timeout=5)
    assert created["type"] == "message"
    await receive_until_final(communicator, created["assistant_message"]["id"])
    assert await Message.objects.filter(role="user").acount() == 1  # the bad frame stored nothing
    await communicator.disconnect()


async def test_oversized_message_is_refused_and_nothing_is_stored(alice, settings):
    settings.PARLEY_MESSAGE_MAX_CHARS = 100
    communicator = await connect(alice)
    await communicator.connect()
    await communicator.send_json_to({"type": "send", "conversation": None, "content": "x" * 101})
    error = await communicator.receive_json_from(timeout=5)
    assert error["code"] == "message_too_long"
    assert "100" in error["text"]
    assert await Message.objects.acount() == 0
    assert await Conversation.objects.acount() == 0
    await communicator.disconnect()


async def test_oversized_frame_is_refused(alice):
    communicator = await connect(alice)
    await communicator.connect()
    await communicator.send_to(text_data='{"type": "send", "content": "' + "x" * 300_000 + '"}')
    error = await communicator.receive_json_from(timeout=5)
    assert error["code"] == "message_too_long"
    await communicator.disconnect()


async def test_frames_are_handled_without_channels_database_hop_per_frame(alice, monkeypatch):
    """Channels closes old database connections on the shared database thread before each frame;
    under load that hop delays every frame. The consumer must not make it."""
    import channels.consumer

    async def refuse() -> None:
        raise AssertionError("a database hop before the frame")

    monkeypatch.setattr(channels.consumer, "aclose_old_connections", refuse)
    communicator = await connect(alice)
    assert (await communicator.connect())[0]
    await communicator.send_json_to({"type": "send", "conversation": None, "content": "Hi /words 3"})
    created = await receive_type(communicator, "message")
    _, final = await receive_until_final(communicator, created["assistant_message"]["id"])
    assert final["type"] == "done"
    await communicator.disconnect()
