"""Files on a message: sent with it, counted in its prompt, refused by models that cannot read
them, checked against the conversation, and shown on the message afterwards."""

from decimal import Decimal

import pytest
from channels.db import database_sync_to_async
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from accounts.models import Plan
from accounts.plans import limits_for
from billing import admission
from billing.models import UsageRecord
from billing.quotas import Reservation
from chat import attachments, replies, uploads
from chat.actions import ActionError
from chat.models import ChatModel, Conversation, Message
from providers.base import TextFile
from tests.files import png
from tests.helpers import connect, receive_until_final, reply_events
from tests.test_api import assert_error

pytestmark = pytest.mark.django_db(transaction=True)

NOTES = "The meeting moved to Thursday.\nBring the budget.\n"


def conversation_of(user, model: str = "parley-demo") -> Conversation:
    return Conversation.objects.create(owner=user, model=ChatModel.objects.get(name=model))


@database_sync_to_async
def with_files(user, *files: tuple[str, bytes], model: str = "parley-demo") -> tuple[Conversation, list[int]]:
    conversation = conversation_of(user, model)
    return conversation, [uploads.store_upload(user, conversation.pk, name, data).pk for name, data in files]


async def reply_text(user, event) -> str:
    seen = await reply_events(user, event["assistant_message"]["id"])
    assert seen[-1]["type"] == "done", seen[-1]
    return "".join(e["text"] for e in seen if e["type"] == "delta")


def prompt_estimate(reply_id: int, user_id: int) -> int:
    claim = Message.objects.get(pk=reply_id).quota_claim
    return Reservation.from_claim(user_id, claim)[1]


async def refusal(code: str, *args, **kwargs) -> ActionError:
    with pytest.raises(ActionError) as refused:
        await replies.send_message(*args, **kwargs)
    assert refused.value.code == code, refused.value.detail
    return refused.value


async def test_a_text_file_goes_with_the_message_and_counts_in_its_prompt_estimate(alice):
    conversation, [notes] = await with_files(alice, ("notes.txt", NOTES.encode()))
    plain, _ = await with_files(alice)
    without = await replies.send_message(alice, plain.pk, "What changed? /words 2")
    event = await replies.send_message(alice, conversation.pk, "What changed? /words 2", attachment_ids=[notes])
    [chip] = event["user_message"]["attachments"]
    assert (chip["id"], chip["name"], chip["tokens"]) == (notes, "notes.txt", TextFile("notes.txt", NOTES).tokens)
    assert await reply_text(alice, event) == "word1 word2"
    await reply_text(alice, without)
    with_file = await database_sync_to_async(prompt_estimate)(event["assistant_message"]["id"], alice.pk)
    without_file = await database_sync_to_async(prompt_estimate)(without["assistant_message"]["id"], alice.pk)
    assert with_file - without_file == chip["tokens"]  # the reservation, and the window, account for the file


async def test_the_demo_model_acknowledges_the_files_it_was_sent(alice):
    conversation, ids = await with_files(alice, ("notes.txt", NOTES.encode()), ("red.png", png(4, 3)))
    event = await replies.send_message(alice, conversation.pk, "Look at these", attachment_ids=ids)
    text = await reply_text(alice, event)
    assert f"I read a file: notes.txt ({len(NOTES)} characters)." in text
    assert "I see an image: red.png, 4×3." in text


async def test_a_model_that_cannot_read_images_refuses_them_and_stores_nothing(alice):
    await ChatModel.objects.acreate(name="blind-demo", label="Blind demo", provider="demo", supports_vision=False)
    conversation, [image] = await with_files(alice, ("red.png", png(4, 3)), model="blind-demo")
    refused = await refusal("model_cannot_see_images", alice, conversation.pk, "What is this?", attachment_ids=[image])
    assert refused.detail == "Blind demo can't read images; pick a model that can, or remove the image (red.png)."
    assert not await Message.objects.filter(conversation=conversation).aexists()
    _, limits = await database_sync_to_async(limits_for)(alice.pk)
    used = {a.name: a.used for a in await database_sync_to_async(admission.allowances)(alice.pk, limits)}
    assert used["tokens_per_day"] == 0 and used["cost_per_month"] == 0  # nothing was reserved
    assert used["requests_per_day"] == 0  # refused before admission: no request counted
    # The same message without the image goes through: nothing was left half done.
    event = await replies.send_message(alice, conversation.pk, "What is this? /words 1")
    assert await reply_text(alice, event) == "word1"


async def test_a_fallback_model_that_cannot_read_images_refuses_them_and_gives_the_reservation_back(alice):
    await ChatModel.objects.acreate(
        name="priced-seer", label="Priced seer", provider="demo", supports_vision=True,
        input_price_per_million=Decimal("10"), output_price_per_million=Decimal("10"),
    )
    blind = await ChatModel.objects.acreate(name="blind-demo", label="Blind demo", provider="demo", supports_vision=False)
    await Plan.objects.filter(name="Free").aupdate(cost_per_month=Decimal("1.00"), fallback_model=blind, fallback_at_percent=80)
    await UsageRecord.objects.acreate(user=alice, kind="reply", provider="demo", model="priced-seer", cost_usd=Decimal("0.85"), outcome="complete")
    conversation, [image] = await with_files(alice, ("red.png", png(4, 3)), model="priced-seer")
    refused = await refusal("model_cannot_see_images", alice, conversation.pk, "What is this?", attachment_ids=[image])
    assert refused.detail.startswith("Blind demo can't read images")
    assert not await Message.objects.filter(conversation=conversation).aexists()
    _, limits = await database_sync_to_async(limits_for)(alice.pk)
    used = {a.name: a.used for a in await database_sync_to_async(admission.allowances)(alice.pk, limits)}
    assert used["tokens_per_day"] == 0 and used["cost_per_month"] == pytest.approx(0.85)  # the reservation was given back


async def test_files_a_send_may_not_name_are_refused_alike(alice, bob):
    conversation, [mine] = await with_files(alice, ("notes.txt", b"mine"))
    elsewhere, [other_conversation] = await with_files(alice, ("other.txt", b"other"))
    _, [bobs] = await with_files(bob, ("bob.txt", b"secret"))
    for foreign in (bobs, other_conversation, 10**9):
        refused = await refusal("not_found", alice, conversation.pk, "hi", attachment_ids=[mine, foreign])
        assert refused.detail == f"Not a file of this conversation: {foreign}. Attach the file to it first, then send."
    for nonsense in ("1", [True], [mine, "2"], [0], [-3], [1.5], [2**63], {"id": mine}):
        refused = await refusal("invalid_input", alice, conversation.pk, "hi", attachment_ids=nonsense)
        assert "attachments must be a list of file ids" in refused.detail
    # A new conversation has no files yet: nothing is created for a send that names some.
    await refusal("not_found", alice, None, "hi", attachment_ids=[mine])
    assert await Conversation.objects.filter(owner=alice).acount() == 2
    assert not await Message.objects.filter(conversation__owner=alice).aexists()


async def test_a_message_carries_at_most_the_allowed_number_of_files(alice, settings):
    settings.PARLEY_ATTACHMENTS_PER_MESSAGE = 2
    conversation, ids = await with_files(alice, ("a.txt", b"a"), ("b.txt", b"b"), ("c.txt", b"c"))
    refused = await refusal("invalid_input", alice, conversation.pk, "hi", attachment_ids=ids)
    assert refused.detail == "A message may carry at most 2 files; it has 3."
    event = await replies.send_message(alice, conversation.pk, "hi /words 1", attachment_ids=[ids[0], ids[1], ids[0]])
    assert [chip["name"] for chip in event["user_message"]["attachments"]] == ["a.txt", "b.txt"]  # each once
    await reply_text(alice, event)


async def test_a_file_too_large_for_the_window_is_refused_in_numbers_and_nothing_is_stored(alice):
    await ChatModel.objects.acreate(name="tiny-demo", label="Tiny demo", provider="demo", context_window=1500, max_output_tokens=500)
    conversation, [big] = await with_files(alice, ("big.txt", b"word " * 2000), model="tiny-demo")
    refused = await refusal("context_too_long", alice, conversation.pk, "Summarise", attachment_ids=[big])
    assert "it needs about 2,5" in refused.detail and "(attached files included), and Tiny demo has room for 1,000." in refused.detail
    assert not await Message.objects.filter(conversation=conversation).aexists()


async def test_the_http_send_takes_files_and_the_conversation_shows_them_after_a_reload(alice, alice_client):
    conversation, [notes, image] = await with_files(alice, ("notes.txt", NOTES.encode()), ("red.png", png(4, 3)))
    client: Client = alice_client
    url = f"/api/conversations/{conversation.pk}/messages"
    refused = await database_sync_to_async(client.post)(url, {"content": "hi", "attachments": "1"}, content_type="application/json")
    assert_error(refused, 400, "invalid_input")
    response = await database_sync_to_async(client.post)(
        url, {"content": "Both, please /words 1", "attachments": [notes, image]}, content_type="application/json"
    )
    assert response.status_code == 201, response.content
    event = response.json()
    await reply_text(alice, event)
    detail = (await database_sync_to_async(client.get)(f"/api/conversations/{conversation.pk}/")).json()
    user_message, reply = detail["messages"]
    assert [(chip["name"], chip["kind"]) for chip in user_message["attachments"]] == [("notes.txt", "text"), ("red.png", "image")]
    assert reply["attachments"] == []
    page = await database_sync_to_async(client.get)(f"/c/{conversation.pk}/")
    assert page.context["uploads"] == []  # sent: no longer waiting in the composer
    assert [chip["name"] for chip in page.context["chat_messages"][0]["attachments"]] == ["notes.txt", "red.png"]


async def test_the_socket_send_frame_takes_files(alice):
    conversation, [notes] = await with_files(alice, ("notes.txt", NOTES.encode()))
    communicator = await connect(alice)
    await communicator.connect()
    await communicator.send_json_to({"type": "send", "conversation": conversation.pk, "content": "hi /words 1", "attachments": [notes]})
    started = await communicator.receive_json_from(timeout=10)
    assert started["type"] == "message" and started["user_message"]["attachments"][0]["name"] == "notes.txt"
    await receive_until_final(communicator, started["assistant_message"]["id"])
    await communicator.send_json_to({"type": "send", "conversation": conversation.pk, "content": "hi", "attachments": ["x"], "ref": 7})
    refused = await communicator.receive_json_from(timeout=10)
    assert (refused["type"], refused["code"], refused["ref"]) == ("error", "invalid_input", 7)
    await communicator.disconnect()


def test_a_stored_message_lists_its_files_without_another_query(alice):
    conversation = conversation_of(alice)
    upload = uploads.store_upload(alice, conversation.pk, "notes.txt", b"notes")
    message = Message.objects.create(conversation=conversation, role="user", content="x")
    attachments.link(message, [upload])
    with CaptureQueriesContext(connection) as queries:
        listed = message.as_dict()["attachments"]
    assert [chip["id"] for chip in listed] == [upload.pk] and not queries.captured_queries
    assert list(Message.objects.get(pk=message.pk).attachments.all()) == [upload]
