"""A title task redelivered after its worker died mid-call never asks the model, or charges, twice."""

import asyncio

import pytest

from billing.models import UsageRecord
from chat.models import ChatModel, Conversation
from chat.titles import generate_title
from parley.redis_clients import sync_client_for
from tests.fakes import Scenario
from tests.fakes.openai_server import OpenAIFake

pytestmark = pytest.mark.django_db(transaction=True)


async def titled_later(settings, fake, owner, question: str) -> Conversation:
    """A conversation of one exchange on a model the fake OpenAI server answers, not yet titled."""
    settings.OPENAI_BASE_URL = fake.base_url
    settings.OPENAI_API_KEY = "sk-test"
    model, _ = await ChatModel.objects.aget_or_create(
        name="fake-gpt", defaults={"label": "Fake", "provider": "openai", "base_url": fake.base_url}
    )
    conversation = await Conversation.objects.acreate(owner=owner, model=model)
    await conversation.messages.acreate(role="user", content=question)
    await conversation.messages.acreate(role="assistant", content="Sure.")
    return conversation


def test_a_redelivered_title_task_falls_back_instead_of_asking_again(alice, settings):
    async def scenario():
        async with OpenAIFake(Scenario(tokens=4)) as fake:
            first = await titled_later(settings, fake, alice, "Plan a trip to Lisbon")
            second = await titled_later(settings, fake, alice, "Plan a trip to Lisbon")
            asked = await asyncio.to_thread(generate_title, first.pk)
            # The second's first delivery asked the model and its worker died before saving anything.
            marker = f"{settings.PARLEY_KEY_PREFIX}:title:{second.pk}:asked"
            sync_client_for(settings.REDIS_URL).set(marker, "1", ex=60)
            redelivered = await asyncio.to_thread(generate_title, second.pk)
            return asked, redelivered, len(fake.requests), second.pk

    asked, redelivered, requests, second = asyncio.run(scenario())
    assert asked == "Hello, wörld —"  # the model's own title, the first time
    assert redelivered == "Plan a trip to Lisbon"  # the question's words, without asking again
    assert requests == 1
    assert UsageRecord.objects.filter(kind="title").count() == 1
    assert not UsageRecord.objects.filter(kind="title", conversation_id=second).exists()
    assert Conversation.objects.get(pk=second).title == "Plan a trip to Lisbon"


def test_without_redis_a_title_falls_back_without_asking_the_model(alice, settings):
    async def scenario():
        async with OpenAIFake(Scenario(tokens=4)) as fake:
            conversation = await titled_later(settings, fake, alice, "Bake bread at home")
            settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
            title = await asyncio.to_thread(generate_title, conversation.pk)
            return title, len(fake.requests), conversation.pk

    title, requests, pk = asyncio.run(scenario())
    assert (title, requests) == ("Bake bread at home", 0)
    assert Conversation.objects.get(pk=pk).title == "Bake bread at home"
    assert not UsageRecord.objects.filter(kind="title").exists()
