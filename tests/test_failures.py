"""A provider error ends the reply as `failed` with plain words; the text so far is kept."""

import pytest

from chat.models import ChatModel, Message
from chat.replies import send_message
from tests.fakes import Scenario, expected_text
from tests.fakes.openai_server import OpenAIFake
from tests.helpers import reply_events

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize(
    ("code", "words_in"),
    [("rate_limited", "too many requests"), ("overloaded", "overloaded"), ("timeout", "too long"), ("auth_failed", "API key")],
)
async def test_provider_errors_end_the_reply_in_plain_words(alice, code, words_in):
    event = await send_message(alice, None, f"please /fail {code}")
    reply_id = event["assistant_message"]["id"]
    seen = await reply_events(alice, reply_id)
    final = seen[-1]
    assert final["type"] == "error" and final["status"] == "failed"
    assert final["code"] == code
    assert words_in in final["text"]
    stored = await Message.objects.aget(pk=reply_id)
    assert stored.status == "failed" and stored.error_code == code and stored.error_text == final["text"]
    partial = "".join(e["text"] for e in seen if e["type"] == "delta")
    assert partial and stored.content == partial
    again = await reply_events(alice, reply_id)  # from the database now: the same ending
    assert again[-1]["code"] == code and "".join(e["text"] for e in again if e["type"] == "delta") == partial


@pytest.fixture
async def openai_model(settings):
    async with OpenAIFake(Scenario(tokens=40, rate=400)) as fake:
        settings.OPENAI_BASE_URL = fake.base_url
        settings.OPENAI_API_KEY = "sk-test"
        settings.PROVIDER_MAX_RETRIES = 0
        model = await ChatModel.objects.acreate(name="fake-gpt", label="Fake GPT", provider="openai", base_url=fake.base_url)
        yield fake, model


async def test_a_reply_from_an_openai_compatible_server_is_stored_with_its_usage(alice, openai_model):
    fake, model = openai_model
    event = await send_message(alice, None, "Hi there", model.name)
    seen = await reply_events(alice, event["assistant_message"]["id"])
    text = "".join(e["text"] for e in seen if e["type"] == "delta")
    assert text == expected_text(40)
    assert seen[-1]["type"] == "done" and seen[-1]["usage"]["completion_tokens"] == 40
    stored = await Message.objects.aget(pk=event["assistant_message"]["id"])
    assert stored.content == text and stored.provider == "openai" and stored.model == "fake-gpt"
    assert stored.completion_tokens == 40 and stored.prompt_tokens and stored.model_version
    sent = fake.last_reply.json
    assert sent["model"] == "fake-gpt" and sent["messages"][-1] == {"role": "user", "content": "Hi there"}


async def test_a_rate_limited_provider_gives_a_retry_hint(alice, openai_model):
    fake, model = openai_model
    fake.scenario = Scenario(kind="rate_limited", retry_after="7")
    event = await send_message(alice, None, "Hi there", model.name)
    seen = await reply_events(alice, event["assistant_message"]["id"])
    assert seen[-1]["type"] == "error" and seen[-1]["code"] == "rate_limited"
    assert seen[-1]["retry_after"] == 7
    stored = await Message.objects.aget(pk=event["assistant_message"]["id"])
    assert stored.status == "failed" and stored.content == ""
