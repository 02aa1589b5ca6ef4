"""The exact-match response cache (resilience/cache.py): a model that opted in replays its reply to
the very same request, through the same streaming path, billing nothing and marked as cached."""

import asyncio
import time
from decimal import Decimal

import orjson
import pytest
from channels.db import database_sync_to_async

from billing.models import UsageRecord
from chat.actions import create_conversation
from chat.models import ChatModel, Message
from chat.replies import attach, send_message
from tests.fakes import Scenario, expected_text
from tests.fakes.openai_server import OpenAIFake
from tests.helpers import reply_events

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
async def fake(settings):
    settings.OPENAI_API_KEY = "sk-test"
    async with OpenAIFake(Scenario(tokens=60, rate=300)) as server:
        settings.OPENAI_BASE_URL = server.base_url
        yield server


async def cached_model(fake, **fields) -> ChatModel:
    defaults = {"cache_responses": True, "temperature": Decimal(0)}
    return await ChatModel.objects.acreate(
        name="cached-gpt", label="Cached GPT", provider="openai", base_url=fake.base_url,
        input_price_per_million=Decimal(1), output_price_per_million=Decimal(1), **{**defaults, **fields},
    )


async def ask(user, model: ChatModel, text: str = "What is a monad?") -> tuple[list[dict], Message, list[float]]:
    # Titled already: no title task, which a live worker of the session could run against this
    # test's fakes after they are gone (and count failures in their breakers).
    conversation = await database_sync_to_async(create_conversation)(user, model.name, title="Resilience")
    event = await send_message(user, conversation.pk, text, model.name)
    seen: list[dict] = []
    arrivals: list[float] = []
    async for batch in attach(user, event["assistant_message"]["id"], "0-0"):
        for entry in batch:
            seen.append(orjson.loads(entry.payload))
            arrivals.append(time.monotonic())
    return seen, await Message.objects.aget(pk=event["assistant_message"]["id"]), arrivals


def ledger_of(message: Message) -> list[tuple]:
    return [(r.outcome, r.prompt_tokens, r.completion_tokens, r.cost_usd) for r in UsageRecord.objects.filter(message=message)]


def text_of(seen: list[dict]) -> str:
    return "".join(event["text"] for event in seen if event["type"] == "delta")


async def test_the_same_request_is_replayed_exactly_and_billed_nothing(alice, fake):
    model = await cached_model(fake)
    first, first_reply, _ = await ask(alice, model)
    assert fake.last_reply.json["temperature"] == 0
    second, second_reply, arrivals = await ask(alice, model)
    assert len(fake.replies) == 1, "the second reply never reached the provider"
    assert text_of(second) == text_of(first) == expected_text(60) == second_reply.content
    assert second[-1]["type"] == "done" and second[-1]["usage"]["prompt_tokens"] == 0
    assert second[-1]["usage"]["completion_tokens"] == 0 and second[-1]["usage"]["cost_usd"] == "0"
    assert second_reply.routing["cached"]["stored_at"] and second[-1]["routing"]["cached"]
    assert "cached" not in (first_reply.routing or {})
    assert await asyncio.to_thread(ledger_of, second_reply) == [("complete", 0, 0, Decimal(0))]
    first_bill = await asyncio.to_thread(ledger_of, first_reply)
    assert first_bill[0][2] == 60 and first_bill[0][3] > 0
    # At a natural pace, not all at once: 60 tokens written at 300 a second are not replayed in a blink.
    deltas = [moment for moment, event in zip(arrivals, second, strict=True) if event["type"] == "delta"]
    assert len(deltas) > 1 and deltas[-1] - deltas[0] > 0.05


async def test_any_difference_in_the_request_is_a_miss(alice, fake):
    model = await cached_model(fake)
    await ask(alice, model, "What is a monad?")
    await ask(alice, model, "What is a monad!")
    assert len(fake.replies) == 2
    await ChatModel.objects.filter(pk=model.pk).aupdate(max_output_tokens=100)
    model = await ChatModel.objects.aget(pk=model.pk)
    await ask(alice, model, "What is a monad?")
    assert len(fake.replies) == 3, "another most output is another request"


async def test_a_sampled_request_is_not_cached_unless_the_admin_says_so(alice, fake):
    model = await cached_model(fake, temperature=None)
    await ask(alice, model)
    await ask(alice, model)
    assert len(fake.replies) == 2
    assert "temperature" not in fake.last_reply.json
    await ChatModel.objects.filter(pk=model.pk).aupdate(cache_any_temperature=True)
    model = await ChatModel.objects.aget(pk=model.pk)
    await ask(alice, model)
    _, reply, _ = await ask(alice, model)
    assert len(fake.replies) == 3 and reply.routing.get("cached")


async def test_a_model_that_did_not_opt_in_is_never_cached(alice, fake):
    model = await cached_model(fake, cache_responses=False)
    await ask(alice, model)
    await ask(alice, model)
    assert len(fake.replies) == 2


async def test_a_failed_reply_is_not_cached(alice, fake):
    model = await cached_model(fake)
    fake.scenario = Scenario(kind="cut", after=5, tokens=60)
    first, _, _ = await ask(alice, model)
    assert first[-1]["type"] == "error"
    fake.scenario = Scenario(tokens=60)
    second, reply, _ = await ask(alice, model)
    assert len(fake.replies) == 2 and text_of(second) == expected_text(60) and not reply.routing.get("cached")


async def gateway_call(user, model: ChatModel, **fields) -> dict:
    """A gateway call to the cached model (gateway/calls.py), read to its end: its final event."""
    from accounts.models import ApiToken
    from gateway import calls
    from gateway.calls import CallRequest

    token, _ = await database_sync_to_async(ApiToken.issue)(user, "cache", scopes=["gateway"])
    request = CallRequest(model=model.name, messages=[{"role": "user", "content": "What is 6 * 7?"}], **fields)
    started = await calls.start(token, request)
    final = None
    async for piece in calls.follow(started):
        final = piece.final or final
    assert final is not None
    return final


async def test_a_gateway_calls_stop_sequences_and_sampling_are_part_of_the_key(alice, fake):
    model = await cached_model(fake)
    await gateway_call(alice, model, options={"stop": ("word9",)})
    await gateway_call(alice, model, options={"stop": ("word9",)})
    assert len(fake.replies) == 1
    await gateway_call(alice, model, options={"stop": ("word3",)})
    await gateway_call(alice, model, options={"stop": ("word9",), "top_p": 0.5})
    await gateway_call(alice, model, options={"stop": ("word9",), "tool_choice": "none"})
    assert len(fake.replies) == 4, "another stop, top_p or tool choice is another request"


async def test_a_reply_that_called_tools_is_not_cached(alice, fake):
    from tests.fakes import Scenario

    model = await cached_model(fake)
    fake.scenario = Scenario(kind="tool_call", tokens=4)
    tools = ({"name": "calculate", "description": "", "parameters": {"type": "object", "properties": {}}},)
    first = await gateway_call(alice, model, tools=tools)
    second = await gateway_call(alice, model, tools=tools)
    assert first["tool_calls"] and second["tool_calls"] == [{**first["tool_calls"][0], "id": second["tool_calls"][0]["id"]}]
    assert len(fake.replies) == 2 and "cached" not in (second["routing"] or {})
