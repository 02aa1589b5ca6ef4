"""A reply from a llama.cpp server through the whole send path (chat/replies, chat/generation,
billing): it completes, it is billed at Parley's estimate and marked so (the server reports no
usage), it asked for a limit, and a Stop hangs up on the server, which stops generating."""

import asyncio
import time

import pytest
from asgiref.sync import sync_to_async

from billing.models import UsageRecord
from chat import discovery
from chat.models import Message
from chat.replies import send_message, stop_message
from providers.base import estimate_tokens
from tests.fakes import Scenario, expected_text
from tests.fakes.llamacpp_server import FOREVER, LlamaCppFake
from tests.helpers import reply_events

pytestmark = pytest.mark.django_db(transaction=True)

MODEL = "qwen2.5-3b-instruct"


@pytest.fixture
async def llama(transactional_db, settings):
    """llama-server as the `openai` endpoint, without a key, its model discovered."""
    async with LlamaCppFake(Scenario(tokens=30), models=[MODEL]) as fake:
        settings.OPENAI_BASE_URL, settings.OPENAI_API_KEY = fake.base_url, ""
        settings.ANTHROPIC_API_KEY, settings.PARLEY_OPENAI_ENDPOINTS, settings.PARLEY_ANTHROPIC_ENDPOINTS = "", [], []
        settings.PROVIDER_MAX_RETRIES = 0
        await sync_to_async(discovery.refresh)()
        yield fake


async def test_a_reply_without_usage_is_billed_at_the_estimate_marked_estimated(alice, llama):
    event = await send_message(alice, None, "Tell me something", MODEL)
    reply_id = event["assistant_message"]["id"]
    seen = await reply_events(alice, reply_id)
    text = "".join(entry["text"] for entry in seen if entry["type"] == "delta")
    done = seen[-1]
    assert text == expected_text(30)
    assert done["type"] == "done" and done["status"] == "complete" and done["usage"]["estimated"] is True

    row = await UsageRecord.objects.aget(message_id=reply_id)
    assert row.estimated and row.outcome == "complete" and row.error_code == ""
    assert row.completion_tokens == estimate_tokens(text) and row.prompt_tokens > 0
    stored = await Message.objects.aget(pk=reply_id)
    assert stored.tokens_estimated and (stored.prompt_tokens, stored.completion_tokens) == (row.prompt_tokens, row.completion_tokens)

    sent = llama.last_reply.json
    assert isinstance(sent["max_tokens"], int) and sent["max_tokens"] > 0 and "max_completion_tokens" not in sent
    assert llama.generations[0].requested == sent["max_tokens"]


async def test_stop_hangs_up_on_the_server_which_stops_generating(alice, llama):
    llama.scenario = Scenario(tokens=FOREVER, rate=50)
    event = await send_message(alice, None, "Write forever", MODEL)
    reply_id = event["assistant_message"]["id"]
    deadline = time.monotonic() + 5
    while not (llama.generations and llama.generations[0].produced >= 5):
        assert time.monotonic() < deadline, "the server never started"
        await asyncio.sleep(0.02)

    await stop_message(alice, reply_id)
    stopped_at = time.monotonic()
    await asyncio.wait_for(llama.generation_stopped.wait(), 2)
    generation = llama.generations[0]
    assert generation.stopped_early and generation.ended - stopped_at < 1
    assert generation.produced < 100 < generation.requested

    seen = await reply_events(alice, reply_id)
    assert seen[-1]["type"] == "done" and seen[-1]["status"] == "stopped"
    row = await UsageRecord.objects.aget(message_id=reply_id)
    assert row.estimated and row.outcome == "stopped" and row.completion_tokens > 0
