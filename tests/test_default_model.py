"""With a real provider configured the default model is a real one: the admin's choice, else the
first discovered; the demo only when no real model is offered."""

import pytest
from asgiref.sync import sync_to_async

from chat import discovery
from chat.actions import default_model
from chat.models import ChatModel, Message
from chat.replies import send_message
from tests.fakes.openai_server import OpenAIFake
from tests.helpers import reply_events

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
async def server(transactional_db, settings):
    async with OpenAIFake(models=["zeta-model", "alpha-model", "mid-model"]) as fake:
        settings.OPENAI_API_KEY = settings.OPENAI_BASE_URL = settings.ANTHROPIC_API_KEY = ""
        settings.PARLEY_OPENAI_ENDPOINTS, settings.PARLEY_ANTHROPIC_ENDPOINTS = [], []
        settings.PROVIDER_MAX_RETRIES = 0
        yield settings, fake


@sync_to_async
def default_name() -> str:
    return default_model().name


async def test_the_default_is_the_admins_choice_else_the_first_discovered_else_the_demo(server, alice_client):
    settings, fake = server
    assert await default_name() == "parley-demo"  # nothing real is configured

    settings.OPENAI_BASE_URL = fake.base_url
    assert await default_name() == "parley-demo"  # configured, not yet listed
    await sync_to_async(discovery.refresh)()
    assert await default_name() == "alpha-model"  # the first discovered, in the picker's order

    await ChatModel.objects.filter(name="mid-model").aupdate(is_default=True)
    assert await default_name() == "mid-model"
    body = await sync_to_async(alice_client.get)("/api/models/")
    assert body.json()["default"] == "mid-model"
    assert {m["name"]: m["price_known"] for m in body.json()["results"]} == {
        "auto": None, "parley-demo": True, "alpha-model": False, "mid-model": False, "zeta-model": False,
    }  # auto's price is each reply's chosen model's (routing/)

    fake.models = ["zeta-model", "alpha-model"]
    await sync_to_async(discovery.refresh)()
    assert await default_name() == "alpha-model"  # the admin's choice is gone from the list

    settings.OPENAI_BASE_URL = ""
    assert await default_name() == "parley-demo"
    settings.PARLEY_DEMO_MODEL = False
    with pytest.raises(Exception, match="No model is configured"):
        await default_name()


async def test_a_conversation_started_without_a_model_gets_the_real_default(server, alice):
    settings, fake = server
    settings.OPENAI_BASE_URL = fake.base_url
    await sync_to_async(discovery.refresh)()
    event = await send_message(alice, None, "Hello")
    await reply_events(alice, event["assistant_message"]["id"])
    reply = await Message.objects.aget(pk=event["assistant_message"]["id"])
    assert (reply.provider, reply.model) == ("openai", "alpha-model") and fake.last_reply.json["model"] == "alpha-model"
