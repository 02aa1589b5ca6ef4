"""Another user can neither list, read, attach to, send into nor stop someone's conversation."""

import json

import pytest
from django.test import Client

from chat.models import ChatModel, Conversation, Message
from tests.helpers import connect

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def alices_chat(alice):
    conversation = Conversation.objects.create(owner=alice, model=ChatModel.objects.get(name="parley-demo"), title="Secret")
    Message.objects.create(conversation=conversation, role="user", content="my secret")
    reply = Message.objects.create(conversation=conversation, role="assistant", content="the secret answer", status="streaming")
    return conversation, reply


def test_http_endpoints_hide_other_users_data(bob, alices_chat):
    conversation, reply = alices_chat
    client = Client()
    client.force_login(bob)
    assert client.get("/api/conversations/").json()["results"] == []
    for method, url, body in [
        ("get", f"/api/conversations/{conversation.pk}/", None),
        ("patch", f"/api/conversations/{conversation.pk}/", {"title": "mine now"}),
        ("delete", f"/api/conversations/{conversation.pk}/", None),
        ("post", f"/api/conversations/{conversation.pk}/messages", {"content": "hello"}),
        ("post", f"/api/messages/{reply.pk}/stop", None),
        ("get", f"/api/messages/{reply.pk}/events", None),
    ]:
        kwargs = {"data": json.dumps(body), "content_type": "application/json"} if body is not None else {}
        response = getattr(client, method)(url, **kwargs)
        assert response.status_code == 404, (method, url)
        assert response.json()["error"]["code"] == "not_found"
        assert b"secret" not in response.content
    conversation.refresh_from_db()
    assert conversation.title == "Secret"
    assert Message.objects.filter(conversation=conversation).count() == 2
    reply.refresh_from_db()
    assert reply.status == "streaming"


async def test_websocket_hides_other_users_data(bob, alices_chat):
    conversation, reply = alices_chat
    communicator = await connect(bob)
    await communicator.connect()
    for frame in [
        {"type": "attach", "message": reply.pk, "after": ""},
        {"type": "stop", "message": reply.pk},
        {"type": "send", "conversation": conversation.pk, "content": "hello"},
    ]:
        await communicator.send_json_to(frame)
        error = await communicator.receive_json_from(timeout=5)
        assert error["type"] == "error" and error["code"] == "not_found", frame
        assert "secret" not in json.dumps(error)
    await communicator.disconnect()
    assert await Message.objects.filter(conversation=conversation).acount() == 2
    assert (await Message.objects.aget(pk=reply.pk)).status == "streaming"
