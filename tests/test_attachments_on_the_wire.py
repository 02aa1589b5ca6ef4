"""What the real SDKs send for a message with files, as the fake servers record it: the text file
inside the user turn, the image in each API's own shape, and the earlier turns' files again."""

import base64

import pytest
from channels.db import database_sync_to_async

from chat import replies, uploads
from chat.models import ChatModel, Conversation
from tests.fakes import Scenario
from tests.fakes.anthropic_server import AnthropicFake
from tests.fakes.openai_server import OpenAIFake
from tests.files import png
from tests.helpers import reply_events

pytestmark = pytest.mark.django_db(transaction=True)

NOTES = 'Budget: 1,200 "EUR".\nDue: Friday.'
IMAGE = png(4, 3)
FILE_BLOCK = f'<file name="notes.txt">\n{NOTES}\n</file>'


@pytest.fixture(params=["openai", "anthropic"])
async def served(request, settings):
    fake = OpenAIFake(Scenario(tokens=3)) if request.param == "openai" else AnthropicFake(Scenario(tokens=3))
    async with fake:
        settings.PROVIDER_MAX_RETRIES = 0
        if request.param == "openai":
            settings.OPENAI_API_KEY = "sk-test"
        else:
            settings.ANTHROPIC_API_KEY = "sk-ant-test"
        model = await ChatModel.objects.acreate(
            name=f"fake-{request.param}", label="Fake", provider=request.param, base_url=fake.base_url, supports_vision=True
        )
        yield request.param, fake, model


@database_sync_to_async
def conversation_with_files(user, model: ChatModel) -> tuple[Conversation, int, int]:
    conversation = Conversation.objects.create(owner=user, model=model)
    notes = uploads.store_upload(user, conversation.pk, "notes.txt", NOTES.encode())
    image = uploads.store_upload(user, conversation.pk, "red.png", IMAGE)
    return conversation, notes.pk, image.pk


async def sent(user, conversation: Conversation, text: str, files: list[int]) -> None:
    event = await replies.send_message(user, conversation.pk, text, attachment_ids=files)
    seen = await reply_events(user, event["assistant_message"]["id"])
    assert seen[-1]["type"] == "done", seen[-1]


async def test_the_text_is_in_the_turn_and_the_image_in_the_apis_shape(alice, served):
    api, fake, model = served
    conversation, notes, image = await conversation_with_files(alice, model)
    await sent(alice, conversation, "What is due?", [notes, image])
    [turn] = fake.last_reply.json["messages"]
    data = base64.b64encode(IMAGE).decode()
    text = f"{FILE_BLOCK}\n\nWhat is due?"
    if api == "openai":
        assert turn == {
            "role": "user",
            "content": [{"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}"}}],
        }
    else:
        assert turn == {
            "role": "user",
            "content": [{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": data}},
                        {"type": "text", "text": text}],
        }


async def test_later_turns_send_earlier_text_files_again_and_name_earlier_images(alice, served):
    api, fake, model = served
    conversation, notes, image = await conversation_with_files(alice, model)
    await sent(alice, conversation, "What is due?", [notes, image])
    await sent(alice, conversation, "And the budget?", [])
    first, answer, second = fake.last_reply.json["messages"]
    assert second == {"role": "user", "content": "And the budget?"}  # a turn without files stays plain text
    assert answer["role"] == "assistant"
    note = '<file name="red.png">\n(An image, 4×3 pixels, shown with this message; not sent again.)\n</file>'
    assert first == {"role": "user", "content": f"{FILE_BLOCK}\n\n{note}\n\nWhat is due?"}


async def test_a_turn_with_only_text_files_is_sent_as_plain_text(alice, served):
    api, fake, model = served
    conversation, notes, _ = await conversation_with_files(alice, model)
    await sent(alice, conversation, "What is due?", [notes])
    assert fake.last_reply.json["messages"] == [{"role": "user", "content": f"{FILE_BLOCK}\n\nWhat is due?"}]
