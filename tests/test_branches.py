"""Edit and regenerate as branches of the message tree: siblings, the branch shown, the history
the model is sent (checked at the fake upstream), switching, paging, and refusals."""

import json

import pytest
from django.test import AsyncClient

from billing.models import UsageRecord
from chat import branches
from chat.models import ChatModel, Conversation, Message
from chat.replies import edit_message, regenerate_message, send_message
from tests.fakes import Scenario
from tests.fakes.openai_server import OpenAIFake
from tests.helpers import connect, receive_type, receive_until_final, reply_events

pytestmark = pytest.mark.django_db(transaction=True)


async def client_for(user) -> AsyncClient:
    client = AsyncClient()
    await client.aforce_login(user)
    return client


async def post(client: AsyncClient, url: str, data: object = None):
    return await client.post(url, json.dumps(data) if data is not None else "", content_type="application/json")


async def finished(user, event: dict) -> dict:
    """Waits for the event's reply to end; its final event."""
    return (await reply_events(user, event["assistant_message"]["id"]))[-1]


async def detail(client: AsyncClient, conversation_id: int, query: str = "") -> dict:
    response = await client.get(f"/api/conversations/{conversation_id}/{query}")
    assert response.status_code == 200, response.content
    return response.json()


def contents(body: dict) -> list[str]:
    return [message["content"] for message in body["messages"]]


@pytest.fixture
async def openai_model(settings):
    async with OpenAIFake(Scenario(tokens=3, rate=1000)) as fake:
        settings.OPENAI_BASE_URL = fake.base_url
        settings.OPENAI_API_KEY = "sk-test"
        settings.PROVIDER_MAX_RETRIES = 0
        model = await ChatModel.objects.acreate(name="fake-gpt", label="Fake GPT", provider="openai", base_url=fake.base_url)
        yield fake, model


def sent_turns(fake: OpenAIFake) -> list[tuple[str, str]]:
    """What the last request to the upstream carried, as (role, content) without the system prompt."""
    return [(m["role"], m["content"]) for m in fake.last_reply.json["messages"] if m["role"] != "system"]


async def test_an_edit_is_a_sibling_and_its_branch_is_shown(alice):
    first = await send_message(alice, None, "first /words 2")
    await finished(alice, first)
    conversation_id = first["conversation"]["id"]
    second = await send_message(alice, conversation_id, "second /words 2")
    await finished(alice, second)
    edited = await edit_message(alice, second["user_message"]["id"], "second, better /words 2")
    await finished(alice, edited)
    assert edited["type"] == "message" and edited["assistant_message"]["status"] == "queued"
    assert edited["user_message"]["parent"] == second["user_message"]["parent"] == first["assistant_message"]["id"]
    assert edited["user_message"]["siblings"] == [second["user_message"]["id"], edited["user_message"]["id"]]
    client = await client_for(alice)
    body = await detail(client, conversation_id)
    assert body["current_leaf"] == edited["assistant_message"]["id"]
    assert [m["id"] for m in body["messages"]] == [
        first["user_message"]["id"], first["assistant_message"]["id"], edited["user_message"]["id"], edited["assistant_message"]["id"]
    ]
    assert body["messages"][2]["siblings"] == edited["user_message"]["siblings"]
    assert body["messages"][0]["siblings"] == [first["user_message"]["id"]]


async def test_a_regenerated_reply_is_a_sibling_and_is_billed_as_a_new_call(alice):
    sent = await send_message(alice, None, "hello /words 2")
    await finished(alice, sent)
    again = await regenerate_message(alice, sent["assistant_message"]["id"])
    final = await finished(alice, again)
    assert final["type"] == "done"
    assert again["user_message"]["id"] == sent["user_message"]["id"]
    assert again["assistant_message"]["parent"] == sent["user_message"]["id"]
    assert again["assistant_message"]["siblings"] == [sent["assistant_message"]["id"], again["assistant_message"]["id"]]
    assert await Message.objects.filter(role="user").acount() == 1
    assert await UsageRecord.objects.acount() == 2


async def test_a_failed_reply_is_retried_by_regenerating_it(alice):
    sent = await send_message(alice, None, "please /fail overloaded")
    assert (await finished(alice, sent))["type"] == "error"
    retried = await regenerate_message(alice, sent["assistant_message"]["id"])
    await finished(alice, retried)
    assert (await Message.objects.aget(pk=retried["assistant_message"]["id"])).status == "failed"  # the same words fail again
    assert await UsageRecord.objects.filter(outcome="failed").acount() == 2


async def test_the_history_sent_to_the_model_follows_the_branch(alice, openai_model):
    fake, model = openai_model
    a = await send_message(alice, None, "A", model.name)
    await finished(alice, a)
    conversation_id = a["conversation"]["id"]
    b = await send_message(alice, conversation_id, "B")
    await finished(alice, b)
    reply_a = (await Message.objects.aget(pk=a["assistant_message"]["id"])).content
    reply_b = (await Message.objects.aget(pk=b["assistant_message"]["id"])).content
    assert sent_turns(fake) == [("user", "A"), ("assistant", reply_a), ("user", "B")]

    edited = await edit_message(alice, a["user_message"]["id"], "A2")
    await finished(alice, edited)
    assert sent_turns(fake) == [("user", "A2")]  # nothing of the other branch
    reply_a2 = (await Message.objects.aget(pk=edited["assistant_message"]["id"])).content

    c = await send_message(alice, conversation_id, "C")
    await finished(alice, c)
    assert c["user_message"]["parent"] == edited["assistant_message"]["id"]
    assert sent_turns(fake) == [("user", "A2"), ("assistant", reply_a2), ("user", "C")]

    again = await regenerate_message(alice, c["assistant_message"]["id"])
    await finished(alice, again)
    assert sent_turns(fake) == [("user", "A2"), ("assistant", reply_a2), ("user", "C")]  # the old reply is not sent

    client = await client_for(alice)
    shown = await post(client, f"/api/messages/{a['user_message']['id']}/show")
    assert shown.status_code == 200, shown.content
    assert contents(shown.json()) == ["A", reply_a, "B", reply_b]
    d = await send_message(alice, conversation_id, "D")
    await finished(alice, d)
    assert d["user_message"]["parent"] == b["assistant_message"]["id"]
    assert sent_turns(fake) == [("user", "A"), ("assistant", reply_a), ("user", "B"), ("assistant", reply_b), ("user", "D")]


async def test_switching_branches_is_stored_and_shows_the_newest_continuation(alice):
    a = await send_message(alice, None, "A /words 1")
    await finished(alice, a)
    conversation_id = a["conversation"]["id"]
    edited = await edit_message(alice, a["user_message"]["id"], "A2 /words 1")
    await finished(alice, edited)
    client = await client_for(alice)
    body = await detail(client, conversation_id)
    assert [m["content"].split()[0] for m in body["messages"] if m["role"] == "user"] == ["A2"]
    assert body["messages"][0]["siblings"] == [a["user_message"]["id"], edited["user_message"]["id"]]

    shown = await post(client, f"/api/messages/{a['user_message']['id']}/show")
    assert [m["id"] for m in shown.json()["messages"]] == [a["user_message"]["id"], a["assistant_message"]["id"]]
    reloaded = await detail(client, conversation_id)  # a reload shows the same branch
    assert [m["id"] for m in reloaded["messages"]] == [a["user_message"]["id"], a["assistant_message"]["id"]]
    page = await client.get(f"/c/{conversation_id}/")
    embedded = json.loads(page.content.decode().split('id="chat-messages" type="application/json">')[1].split("</script>")[0])
    assert [m["id"] for m in embedded] == [a["user_message"]["id"], a["assistant_message"]["id"]]
    assert embedded[0]["siblings"] == [a["user_message"]["id"], edited["user_message"]["id"]]


async def test_pages_of_a_long_branch_follow_the_branch(alice):
    """`before`, `limit` and `older` page along the branch shown, not through every message."""
    a = await send_message(alice, None, "root /words 1")
    await finished(alice, a)
    conversation = await Conversation.objects.aget(pk=a["conversation"]["id"])
    # A long branch under the first reply, written directly; then an edit of the root hides it.
    parent_id, ids = a["assistant_message"]["id"], [a["user_message"]["id"], a["assistant_message"]["id"]]
    for index in range(30):
        message = await Message.objects.acreate(
            conversation=conversation, parent_id=parent_id, role="user" if index % 2 == 0 else "assistant", content=f"m{index}"
        )
        parent_id = message.pk
        ids.append(message.pk)
    client = await client_for(alice)
    linear = await detail(client, conversation.pk, "?limit=10")
    assert [m["id"] for m in linear["messages"]] == ids[-10:]
    edited = await edit_message(alice, a["user_message"]["id"], "other root /words 1")
    await finished(alice, edited)
    assert [m["id"] for m in (await detail(client, conversation.pk))["messages"]] == [
        edited["user_message"]["id"], edited["assistant_message"]["id"]
    ]
    await post(client, f"/api/messages/{ids[5]}/show")
    first = await detail(client, conversation.pk, "?limit=10")
    assert [m["id"] for m in first["messages"]] == ids[-10:] and first["has_more"]
    older = await client.get(first["older"])
    assert [m["id"] for m in older.json()["messages"]] == ids[-20:-10]
    last = await detail(client, conversation.pk, f"?limit=10&before={ids[-20]}")
    assert [m["id"] for m in await _page_ids(client, conversation.pk, last)] == ids[:-20]


async def _page_ids(client: AsyncClient, conversation_id: int, page: dict) -> list[dict]:
    """This page and every older one, oldest first."""
    found = list(page["messages"])
    while page["older"]:
        page = (await client.get(page["older"])).json()
        found = page["messages"] + found
    return found


async def test_a_conversation_of_messages_without_parents_branches_as_it_was_shown(alice):
    """Messages written before messages had parents (or by scripts) show in id order; an edit keeps
    what came before it."""
    conversation = await Conversation.objects.acreate(owner=alice, model=await ChatModel.objects.aget(name="parley-demo"))
    rows = [await Message.objects.acreate(conversation=conversation, role=role, content=text)
            for role, text in [("user", "one"), ("assistant", "uno"), ("user", "two"), ("assistant", "dos")]]
    edited = await edit_message(alice, rows[2].pk, "three /words 1")
    await finished(alice, edited)
    assert edited["user_message"]["parent"] == rows[1].pk
    assert edited["user_message"]["siblings"] == [rows[2].pk, edited["user_message"]["id"]]
    client = await client_for(alice)
    body = await detail(client, conversation.pk)
    assert [m["id"] for m in body["messages"]][:2] == [rows[0].pk, rows[1].pk]
    assert body["messages"][2]["id"] == edited["user_message"]["id"]


async def test_edit_and_regenerate_refuse_bad_input_and_store_nothing(alice, bob):
    sent = await send_message(alice, None, "hello /words 1")
    await finished(alice, sent)
    user_id, reply_id = sent["user_message"]["id"], sent["assistant_message"]["id"]
    client = await client_for(alice)
    count = await Message.objects.acount()

    async def refused(url: str, data: object, status: int, code: str, as_client: AsyncClient = client) -> None:
        response = await post(as_client, url, data)
        assert response.status_code == status, response.content
        assert response.json()["error"]["code"] == code and response.json()["error"]["text"]

    await refused(f"/api/messages/{reply_id}/edit", {"content": "x"}, 400, "invalid_input")
    await refused(f"/api/messages/{user_id}/regenerate", None, 400, "invalid_input")
    await refused(f"/api/messages/{user_id}/edit", {"content": "  "}, 400, "empty_message")
    await refused(f"/api/messages/{user_id}/edit", {}, 400, "invalid_input")
    await refused(f"/api/messages/{user_id}/edit", {"content": "x" * 40_000}, 413, "message_too_long")
    await refused(f"/api/messages/{user_id}/edit", {"content": "x", "role": "assistant"}, 400, "invalid_input")
    await refused(f"/api/messages/{reply_id}/regenerate", {"content": "x"}, 400, "invalid_input")
    await refused("/api/messages/99999999/edit", {"content": "x"}, 404, "not_found")
    bobs = await client_for(bob)
    await refused(f"/api/messages/{user_id}/edit", {"content": "x"}, 404, "not_found", bobs)
    await refused(f"/api/messages/{reply_id}/regenerate", None, 404, "not_found", bobs)
    await refused(f"/api/messages/{user_id}/show", None, 404, "not_found", bobs)
    await Message.objects.filter(pk=reply_id).aupdate(status="streaming")  # a reply under way
    await refused(f"/api/messages/{user_id}/edit", {"content": "x"}, 409, "conversation_busy")
    await refused(f"/api/messages/{reply_id}/regenerate", None, 409, "conversation_busy")
    assert await Message.objects.acount() == count
    assert (await Conversation.objects.aget(pk=sent["conversation"]["id"])).current_leaf_id is None
    assert await UsageRecord.objects.acount() == 1


async def test_edit_and_regenerate_over_http_answer_like_a_send(alice):
    sent = await send_message(alice, None, "hello /words 1")
    await finished(alice, sent)
    client = await client_for(alice)
    edited = await post(client, f"/api/messages/{sent['user_message']['id']}/edit", {"content": "hi /words 1"})
    assert edited.status_code == 201, edited.content
    event = edited.json()
    assert event["type"] == "message" and event["user_message"]["content"] == "hi /words 1"
    await finished(alice, event)
    regenerated = await post(client, f"/api/messages/{event['assistant_message']['id']}/regenerate")
    assert regenerated.status_code == 201, regenerated.content
    assert regenerated.json()["user_message"]["id"] == event["user_message"]["id"]
    await finished(alice, regenerated.json())


async def test_edit_and_regenerate_frames_are_answered_like_a_send(alice):
    tab, other = await connect(alice), await connect(alice)
    await tab.connect()
    await other.connect()
    await tab.send_json_to({"type": "send", "conversation": None, "content": "hello /words 2"})
    sent = await receive_type(tab, "message")
    await receive_until_final(tab, sent["assistant_message"]["id"])
    await tab.send_json_to({"type": "edit", "message": sent["user_message"]["id"], "content": "hi /words 2", "ref": "e1"})
    edited = await receive_type(tab, "message")
    assert edited["ref"] == "e1" and edited["user_message"]["siblings"] == [sent["user_message"]["id"], edited["user_message"]["id"]]
    _, final = await receive_until_final(tab, edited["assistant_message"]["id"])  # the socket follows the new reply
    assert final["type"] == "done"
    heard = await receive_type(other, "message")
    while heard["assistant_message"]["id"] != edited["assistant_message"]["id"]:
        heard = await receive_type(other, "message")
    assert heard["origin"]  # the other tab hears of the new branch, to follow it
    await tab.send_json_to({"type": "regenerate", "message": edited["assistant_message"]["id"], "ref": "r1"})
    again = await receive_type(tab, "message")
    assert again["ref"] == "r1" and again["assistant_message"]["parent"] == edited["user_message"]["id"]
    await receive_until_final(tab, again["assistant_message"]["id"])
    await tab.send_json_to({"type": "regenerate", "message": edited["user_message"]["id"], "ref": "r2"})
    refused = await receive_type(tab, "error")
    assert refused["ref"] == "r2" and refused["code"] == "invalid_input"
    await tab.disconnect()
    await other.disconnect()


@pytest.mark.django_db
def test_branch_messages_is_the_path_shown(alice):
    conversation = Conversation.objects.create(owner=alice, model=ChatModel.objects.get(name="parley-demo"))
    root = Message.objects.create(conversation=conversation, role="user", content="q")
    one = Message.objects.create(conversation=conversation, parent=root, role="assistant", content="a1")
    two = Message.objects.create(conversation=conversation, parent=root, role="assistant", content="a2")
    assert [m.pk for m in branches.branch_messages(conversation)] == [root.pk, one.pk, two.pk]  # never branched: id order
    assert [m.pk for m in branches.newest_of_branch(conversation, 2)] == [one.pk, two.pk]
    branches.set_leaf(conversation, one.pk)
    assert [m.pk for m in branches.branch_messages(conversation)] == [root.pk, one.pk]
    assert [m.pk for m in branches.newest_of_branch(conversation, 1)] == [one.pk]  # what an agent run is told of
    branches.show(conversation, two)
    assert [m.pk for m in branches.branch_messages(conversation)] == [root.pk, two.pk]
    assert branches.siblings_of(conversation, [root, two]) == {root.pk: [root.pk], two.pk: [one.pk, two.pk]}


@pytest.mark.django_db
def test_a_branched_conversation_can_be_deleted(alice):
    from chat.actions import delete_conversation

    conversation = Conversation.objects.create(owner=alice, model=ChatModel.objects.get(name="parley-demo"))
    root = Message.objects.create(conversation=conversation, role="user", content="q")
    reply = Message.objects.create(conversation=conversation, parent=root, role="assistant", content="a")
    branches.set_leaf(conversation, reply.pk)
    delete_conversation(conversation)
    assert not Conversation.objects.exists() and not Message.objects.exists()
