"""Replies from HTTP providers are read once per flush window, not once per token, and lose nothing."""

import asyncio

import pytest

from chat.models import ChatModel, Message
from chat.replies import send_message, stop_message
from streaming import eventlog
from tests.fakes import Scenario, expected_text
from tests.fakes.openai_server import OpenAIFake
from tests.helpers import reply_events

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
async def paced_model(settings):
    async with OpenAIFake(Scenario(tokens=120, rate=240)) as fake:  # one token per write, 0.5 s in all
        settings.OPENAI_BASE_URL = fake.base_url
        settings.OPENAI_API_KEY = "sk-test"
        settings.PROVIDER_MAX_RETRIES = 0
        settings.PARLEY_FLUSH_MS_MIN = 30
        model = await ChatModel.objects.acreate(name="fake-gpt", label="Fake GPT", provider="openai", base_url=fake.base_url)
        yield fake, model


async def test_tokens_are_read_in_batches_and_arrive_exactly_once(alice, paced_model, monkeypatch):
    _, model = paced_model
    appends = 0
    append = eventlog.LocalLog.append

    def counting(self, text: str) -> None:
        nonlocal appends
        appends += 1
        append(self, text)

    monkeypatch.setattr(eventlog.LocalLog, "append", counting)
    event = await send_message(alice, None, "Hi", model.name)
    seen = await reply_events(alice, event["assistant_message"]["id"])
    assert "".join(e["text"] for e in seen if e["type"] == "delta") == expected_text(120)
    assert seen[-1]["type"] == "done" and seen[-1]["status"] == "complete"
    # 0.5 s of tokens in 30 ms windows: about 17 reads, not 120.
    assert appends < 60, appends


async def test_stopping_one_paced_reply_leaves_the_others_running(alice, bob, paced_model):
    fake, model = paced_model
    fake.scenario = Scenario(tokens=400, rate=400)  # 1 s
    first = await send_message(alice, None, "one", model.name)
    second = await send_message(bob, None, "two", model.name)
    await asyncio.sleep(0.3)
    await stop_message(alice, first["assistant_message"]["id"])
    stopped, finished = await asyncio.gather(
        reply_events(alice, first["assistant_message"]["id"]), reply_events(bob, second["assistant_message"]["id"])
    )
    assert stopped[-1]["status"] == "stopped"
    partial = "".join(e["text"] for e in stopped if e["type"] == "delta")
    assert partial and expected_text(400).startswith(partial) and partial != expected_text(400)
    assert finished[-1]["status"] == "complete"
    assert "".join(e["text"] for e in finished if e["type"] == "delta") == expected_text(400)
    stored = await Message.objects.aget(pk=first["assistant_message"]["id"])
    assert stored.status == "stopped" and stored.content == partial
