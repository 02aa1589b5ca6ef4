"""`GET /api/me/export`: everything of the requester's as one streamed JSON download, nothing of
anyone else's."""

from decimal import Decimal

import orjson
import pytest
from django.test import AsyncClient, Client

from accounts import export
from accounts.models import ApiToken
from agents.models import AgentRun, AgentStep, Artifact
from billing.models import UsageRecord
from chat.models import ChatModel, Conversation, Message, Upload
from sharing.models import SharedLink
from support.models import Feedback

# The export reads on a thread of its own, with a connection of its own: it sees committed rows only.
pytestmark = pytest.mark.django_db(transaction=True)

URL = "/api/me/export"


def demo() -> ChatModel:
    return ChatModel.objects.get(name="parley-demo")


def fill(user, word: str) -> dict[str, object]:
    """A user's data of every kind; `word` marks each text so that another user's shows up if leaked."""
    talk = Conversation.objects.create(owner=user, title=f"{word} talk", model=demo(), system_prompt=f"{word} prompt")
    archived = Conversation.objects.create(owner=user, title=f"{word} old", model=demo(), archived=True)
    question = Message.objects.create(conversation=talk, role="user", content=f"{word} question")
    first = Message.objects.create(
        conversation=talk, parent=question, role="assistant", content=f"{word} answer", model="parley-demo",
        prompt_tokens=3, completion_tokens=5, cost_usd=Decimal("0.000125"),
    )
    # A regenerated reply: a second branch beside the first.
    second = Message.objects.create(
        conversation=talk, parent=question, role="assistant", content=f"{word} failed", status="failed",
        error_code="overloaded", model="parley-demo",
    )
    Message.objects.create(conversation=archived, role="user", content=f"{word} archived question")
    upload = Upload.objects.create(
        conversation=talk, owner=user, name=f"{word}.txt", content_type=Upload.TEXT, size=9, data=f"{word} bytes".encode(),
        text=f"{word} file text", chars=14,
    )
    question.attachments.add(upload)
    run = AgentRun.objects.create(owner=user, conversation=talk, goal=f"{word} goal", model="parley-demo", status="succeeded")
    AgentStep.objects.create(run=run, index=1, kind="tool", title=f"{word} step", status="succeeded", tool="calculator")
    Artifact.objects.create(run=run, name="report.md", content=f"# {word} report")
    Feedback.objects.create(message=first, conversation=talk, user=user, rating=1, comment=f"{word} thanks", model="parley-demo")
    link = SharedLink.objects.create(conversation=talk, owner=user, title=f"{word} talk", snapshot={"messages": []})
    UsageRecord.objects.create(
        user=user, conversation=talk, message=first, kind="reply", provider="demo", model="parley-demo", prompt_tokens=3,
        completion_tokens=5, cost_usd=Decimal("0.000125"), outcome="complete",
    )
    token, raw = ApiToken.issue(user, f"{word} script")
    return {"talk": talk, "archived": archived, "messages": {question.pk, first.pk, second.pk}, "second": second,
            "upload": upload, "run": run, "link": link, "raw_token": raw}


async def download(client: AsyncClient, **headers: str) -> tuple[object, bytes]:
    response = await client.get(URL, headers=headers)
    body = b"".join([chunk async for chunk in response.streaming_content]) if response.streaming else response.content
    return response, body


@pytest.fixture
def alices(alice):
    return fill(alice, "ALICE")


@pytest.fixture
def bobs(bob):
    return fill(bob, "BOB")


async def test_the_download_holds_everything_of_alices(alice, alices, bobs):
    client = AsyncClient()
    await client.aforce_login(alice)
    response, body = await download(client)

    assert response.status_code == 200 and response.streaming
    assert response["Content-Type"] == "application/json"
    assert response["Content-Disposition"].startswith('attachment; filename="parley-data-alice-')
    assert response["Content-Disposition"].endswith('.json"')
    assert response["Cache-Control"] == "no-store"
    data = orjson.loads(body)
    assert data["format"] == "parley-data/1"
    assert data["account"]["username"] == "alice" and data["account"]["plan"] == "Free"
    assert {"email", "date_joined"} <= set(data["account"])

    conversations = {conversation["id"]: conversation for conversation in data["conversations"]}
    assert set(conversations) == {alices["talk"].pk, alices["archived"].pk}
    assert conversations[alices["archived"].pk]["archived"] is True
    talk = conversations[alices["talk"].pk]
    assert talk["system_prompt"] == "ALICE prompt"
    assert {message["id"] for message in talk["messages"]} == alices["messages"]  # both branches
    failed = next(message for message in talk["messages"] if message["id"] == alices["second"].pk)
    assert (failed["status"], failed["error_code"], failed["parent"]) == ("failed", "overloaded", alices["second"].parent_id)
    answer = next(message for message in talk["messages"] if message["content"] == "ALICE answer")
    assert (answer["prompt_tokens"], answer["completion_tokens"], answer["cost_usd"], answer["model"]) == (3, 5, "0.000125", "parley-demo")
    question = next(message for message in talk["messages"] if message["role"] == "user")
    assert question["attachments"] == [alices["upload"].pk]
    assert talk["uploads"] == [{"id": alices["upload"].pk, "name": "ALICE.txt", "content_type": "text/plain", "size": 9,
                                "created": talk["uploads"][0]["created"]}]
    assert b"ALICE bytes" not in body and b"ALICE file text" not in body  # metadata only
    [run] = talk["agent_runs"]
    assert run["goal"] == "ALICE goal" and run["steps"][0]["title"] == "ALICE step"
    assert run["artifacts"][0]["content"] == "# ALICE report"

    assert [(item["message_id"], item["rating"], item["comment"]) for item in data["feedback"]] == [
        (answer["id"], 1, "ALICE thanks")]
    [link] = data["share_links"]
    assert link["url"] == f"http://testserver/s/{alices['link'].token}"
    [token] = data["api_tokens"]
    assert token["name"] == "ALICE script" and alices["raw_token"].encode() not in body
    [charge] = data["usage"]
    assert (charge["message_id"], charge["cost_usd"], charge["outcome"]) == (answer["id"], "0.00012500", "complete")


async def test_nothing_of_bobs_is_in_alices_download(alice, alices, bobs):
    client = AsyncClient()
    await client.aforce_login(alice)
    _, body = await download(client)
    assert b"BOB" not in body
    data = orjson.loads(body)
    assert bobs["talk"].pk not in {conversation["id"] for conversation in data["conversations"]}


async def test_a_bearer_token_downloads_its_owners_data(bob, alices, bobs):
    response, body = await download(AsyncClient(), Authorization=f"Bearer {bobs['raw_token']}")
    assert response.status_code == 200, body
    data = orjson.loads(body)
    assert data["account"]["username"] == "bob"
    assert b"ALICE" not in body


async def test_anonymous_requests_and_other_methods_are_refused(alice, alices):
    response = await AsyncClient().get(URL)
    assert response.status_code == 401
    assert orjson.loads(response.content)["error"]["code"] == "not_authenticated"
    client = AsyncClient()
    await client.aforce_login(alice)
    response = await client.post(URL)
    assert response.status_code == 405
    assert orjson.loads(response.content)["error"]["code"] == "method_not_allowed"


@pytest.fixture
def many(alice) -> list[Conversation]:
    """Past two batches of conversations, every third without messages."""
    model = demo()
    conversations = Conversation.objects.bulk_create([Conversation(owner=alice, model=model) for _ in range(export.BATCH * 2 + 7)])
    Message.objects.bulk_create([
        Message(conversation=conversation, role="user", content=f"for {conversation.pk}")
        for index, conversation in enumerate(conversations) if index % 3
    ])
    return conversations


async def test_many_conversations_come_in_many_chunks_each_with_its_own_messages(alice, many, monkeypatch):
    conversations = many
    monkeypatch.setattr(export, "CHUNK_BYTES", 512)  # chunks smaller than a batch
    client = AsyncClient()
    await client.aforce_login(alice)
    response = await client.get(URL)
    chunks = [chunk async for chunk in response.streaming_content]
    assert len(chunks) > 20
    data = orjson.loads(b"".join(chunks))
    assert [conversation["id"] for conversation in data["conversations"]] == sorted(c.pk for c in conversations)
    for index, conversation in enumerate(data["conversations"]):
        expected = [f"for {conversation['id']}"] if index % 3 else []
        assert [message["content"] for message in conversation["messages"]] == expected


def test_the_account_menu_offers_the_download(alice):
    client = Client()
    client.force_login(alice)
    page = client.get("/accounts/tokens/").content.decode()
    assert f'href="{URL}" download>Download my data</a>' in page


async def test_the_export_reads_on_a_thread_of_its_own(alice, alices):
    import threading

    from django.db.backends.signals import connection_created

    from accounts.api import THREAD_NAME

    opened: list[str] = []

    def record(sender: object, **kwargs: object) -> None:
        opened.append(threading.current_thread().name)

    connection_created.connect(record)
    try:
        client = AsyncClient()
        await client.aforce_login(alice)
        response, body = await download(client)
    finally:
        connection_created.disconnect(record)
    assert response.status_code == 200 and orjson.loads(body)["account"]["username"] == "alice"
    assert any(name.startswith(THREAD_NAME) for name in opened), opened


async def test_downloads_past_the_processs_few_at_once_are_asked_to_come_back(alice, many, monkeypatch):
    from accounts import api

    monkeypatch.setattr(api, "AT_ONCE", 1)
    monkeypatch.setattr(export, "CHUNK_BYTES", 512)
    client = AsyncClient()
    await client.aforce_login(alice)
    first = await client.get(URL)
    reading = aiter(first.streaming_content)
    await anext(reading)  # under way, its client reading slowly

    refused = await client.get(URL)
    assert refused.status_code == 503 and refused["Retry-After"] == "30"
    assert orjson.loads(refused.content)["error"]["code"] == "busy"

    async for _ in reading:  # the first one ends
        pass
    response, body = await download(client)
    assert response.status_code == 200 and orjson.loads(body)["account"]["username"] == "alice"
