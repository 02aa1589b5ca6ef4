"""Shared pieces of the gateway's live tests: a Parley (daphne) of their own, the fake OpenAI
upstream on a thread of its own (so that the SDKs' blocking clients may call while it answers),
and a catalogue model pointed at it."""

import asyncio
import threading
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest

from chat.models import ChatModel
from resilience import chains
from tests.fakes import Recorded, Scenario
from tests.fakes.openai_server import OpenAIFake
from tests.live import LiveApp, LiveProcess, child_env

UPSTREAM = "fake-gpt"
IMAGE_MAX_BYTES = 100_000  # the gateway's Parley takes images up to this size
MAX_BODY_BYTES = 1_000_000  # and bodies up to this size (PARLEY_MAX_BODY_BYTES)


class ThreadedFake:
    """An `OpenAIFake` served by an event loop on its own thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = OpenAIFake(Scenario(tokens=12))
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)

    def reset(self) -> None:
        self.server.scenario = Scenario(tokens=12)
        self.server.requests.clear()

    @property
    def requests(self) -> list[Recorded]:
        return list(self.server.requests)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def fake_upstream() -> Iterator[ThreadedFake]:
    fake = ThreadedFake()
    yield fake
    fake.close()


@pytest.fixture
def upstream(fake_upstream: ThreadedFake) -> ThreadedFake:
    fake_upstream.reset()
    return fake_upstream


@pytest.fixture(scope="module")
def gateway_app(django_db_setup, django_db_blocker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApp]:
    """A daphne of the module's own: quick retries, so that an upstream that keeps failing is
    given up on within a second."""
    with django_db_blocker.unblock():
        env = child_env(
            OPENAI_API_KEY="sk-test", PARLEY_RETRY_ATTEMPTS="2", PARLEY_RETRY_BASE_SECONDS="0.02",
            PARLEY_RETRY_MAX_BACKOFF_SECONDS="0.05", PARLEY_RETRY_AFTER_CAP_SECONDS="0.1",
            PARLEY_IMAGE_MAX_BYTES=str(IMAGE_MAX_BYTES), PARLEY_MAX_BODY_BYTES=str(MAX_BODY_BYTES),
        )
    app = LiveApp(tmp_path_factory.mktemp("gateway"), env)
    try:
        app.start_daphne()
        yield app
    finally:
        app.stop()


def upstream_model(fake: ThreadedFake, name: str = UPSTREAM, remote: str = "", **fields: Any) -> ChatModel:
    chains.forget()
    fields.setdefault("supports_vision", True)
    return ChatModel.objects.create(
        name=name, label=name.upper(), provider="openai", base_url=fake.server.base_url, remote_name=remote,
        input_price_per_million=Decimal("1"), output_price_per_million=Decimal("2"), **fields,
    )


class Counter:
    """Counts the HTTP requests an SDK client sends (its retries included), and keeps each
    answer's status and `retry-after`."""

    def __init__(self) -> None:
        self.sent = 0
        self.answers: list[tuple[int, str | None]] = []

    def sending(self, request: httpx.Request) -> None:
        self.sent += 1

    def answered(self, response: httpx.Response) -> None:
        self.answers.append((response.status_code, response.headers.get("retry-after")))

    async def async_sending(self, request: httpx.Request) -> None:
        self.sending(request)

    async def async_answered(self, response: httpx.Response) -> None:
        self.answered(response)


def client(app: LiveApp | LiveProcess, key: str, counter: Counter | None = None, **options: Any) -> openai.OpenAI:
    hooks = {"request": [counter.sending], "response": [counter.answered]} if counter else {}
    options.setdefault("max_retries", 0)
    return openai.OpenAI(
        base_url=f"{app.url}/v1", api_key=key, http_client=httpx.Client(event_hooks=hooks, timeout=30), **options,
    )


def async_client(app: LiveApp | LiveProcess, key: str, counter: Counter | None = None, **options: Any) -> openai.AsyncOpenAI:
    hooks = {"request": [counter.async_sending], "response": [counter.async_answered]} if counter else {}
    options.setdefault("max_retries", 0)
    return openai.AsyncOpenAI(
        base_url=f"{app.url}/v1", api_key=key, http_client=httpx.AsyncClient(event_hooks=hooks, timeout=30), **options,
    )
