"""The catalogue follows the endpoints' own model lists: added, kept, marked unavailable; several
OpenAI-compatible endpoints at once, each with its key; an endpoint down at start-up comes in later."""

import socket

import pytest
from asgiref.sync import sync_to_async

from chat import discovery
from chat.models import ChatModel, ProviderEndpoint
from chat.replies import send_message
from tests.fakes import Scenario, expected_text
from tests.fakes.anthropic_server import AnthropicFake
from tests.fakes.openai_server import OpenAIFake
from tests.helpers import reply_events

pytestmark = pytest.mark.django_db(transaction=True)

refresh = sync_to_async(discovery.refresh)


@sync_to_async
def offered_names() -> list[str]:
    return list(ChatModel.objects.offered().values_list("name", flat=True))


@sync_to_async
def status_of(name: str) -> ProviderEndpoint:
    return ProviderEndpoint.objects.get(name=name)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def no_endpoints(transactional_db, settings):
    settings.OPENAI_API_KEY = settings.OPENAI_BASE_URL = settings.ANTHROPIC_API_KEY = ""
    settings.PARLEY_OPENAI_ENDPOINTS, settings.PARLEY_ANTHROPIC_ENDPOINTS = [], []
    settings.PROVIDER_MAX_RETRIES = 0
    return settings


async def test_discovery_adds_listed_models_and_marks_the_unlisted_unavailable(no_endpoints):
    async with OpenAIFake(api_key="sk-local", models=["llama-3-8b", "qwen2.5-7b", "nomic-embed-text"]) as fake:
        no_endpoints.OPENAI_BASE_URL, no_endpoints.OPENAI_API_KEY = fake.base_url, "sk-local"
        assert await offered_names() == ["parley-demo"]  # nothing is offered before the list is read

        [outcome] = await refresh()
        assert outcome.ok and outcome.listed == 2 and outcome.added == 2
        llama = await ChatModel.objects.aget(name="llama-3-8b")
        # Labelled as the server calls it, priced as nobody has said: unknown.
        assert (llama.endpoint, llama.provider, llama.label, llama.available) == ("openai", "openai", "llama-3-8b", True)
        assert not llama.price_known and llama.last_seen is not None
        assert set(await offered_names()) == {"parley-demo", "llama-3-8b", "qwen2.5-7b"}  # no embedding model

        fake.models = ["qwen2.5-7b", "mistral-7b"]
        [outcome] = await refresh()
        assert (outcome.listed, outcome.added, outcome.gone) == (2, 1, 1)
        assert set(await offered_names()) == {"parley-demo", "qwen2.5-7b", "mistral-7b"}
        await llama.arefresh_from_db()
        assert not llama.available  # kept for its conversations and ledger, no longer offered
        status = await status_of("openai")
        assert status.ok and status.models_listed == 2 and status.base_url == fake.base_url and fake.listings == 2

        fake.models = ["llama-3-8b", "qwen2.5-7b", "mistral-7b"]
        await refresh()
        await llama.arefresh_from_db()
        assert llama.available and await ChatModel.objects.filter(name="llama-3-8b").acount() == 1  # the same row again


async def test_an_anthropic_style_list_is_read_through_every_page(no_endpoints):
    ids = [f"claude-test-{i:03}" for i in range(130)]  # more than one page of 100
    async with AnthropicFake(api_key="sk-ant-local", models=ids) as fake:
        no_endpoints.ANTHROPIC_API_KEY, no_endpoints.ANTHROPIC_BASE_URL = "sk-ant-local", fake.base_url
        [outcome] = await refresh()
        assert outcome.ok and outcome.listed == 130 and fake.listings == 2
        names = set(await offered_names())
        assert set(ids) <= names
        model = await ChatModel.objects.aget(name="claude-test-007")
        assert (model.provider, model.endpoint, model.price_known) == ("anthropic", "anthropic", False)


async def test_two_openai_compatible_endpoints_each_get_their_own_key(no_endpoints, alice):
    async with (
        OpenAIFake(Scenario(tokens=5), api_key="key-a", models=["same-model"]) as local,
        OpenAIFake(Scenario(tokens=7), api_key="key-b", models=["same-model", "only-b"]) as vllm,
    ):
        no_endpoints.PARLEY_OPENAI_ENDPOINTS = [("local", local.base_url, "key-a"), ("vllm", vllm.base_url, "key-b")]
        outcomes = await refresh()
        assert [(o.endpoint, o.ok, o.listed) for o in outcomes] == [("local", True, 1), ("vllm", True, 2)]
        assert set(await offered_names()) == {"parley-demo", "local/same-model", "vllm/same-model", "vllm/only-b"}
        on_b = await ChatModel.objects.aget(name="vllm/same-model")
        assert on_b.label == "same-model · vllm" and on_b.remote_name == "same-model"

        for name, fake, tokens, key in (("local/same-model", local, 5, "key-a"), ("vllm/same-model", vllm, 7, "key-b")):
            event = await send_message(alice, None, "Hello", name)
            seen = await reply_events(alice, event["assistant_message"]["id"])
            assert seen[-1]["type"] == "done" and "".join(e["text"] for e in seen if e["type"] == "delta") == expected_text(tokens)
            sent = fake.last_reply
            # The endpoint's own id, at its own URL, with its own key.
            assert sent.json["model"] == "same-model" and sent.headers["authorization"] == f"Bearer {key}"
        assert len(local.replies) == 1 and len(vllm.replies) == 1

        # A wrong key is an endpoint that cannot be read: it says so and keeps what it had.
        no_endpoints.PARLEY_OPENAI_ENDPOINTS = [("local", local.base_url, "key-b"), ("vllm", vllm.base_url, "key-b")]
        local_outcome, _ = await refresh()
        assert not local_outcome.ok and "401" in local_outcome.error
        status = await status_of("local")
        assert status.ok is False and "401" in status.error and status.models_listed == 1
        assert "local/same-model" in await offered_names()

        # An endpoint taken out of the settings takes its models out of the picker.
        no_endpoints.PARLEY_OPENAI_ENDPOINTS = [("vllm", vllm.base_url, "key-b")]
        assert set(await offered_names()) == {"parley-demo", "vllm/same-model", "vllm/only-b"}


async def test_an_endpoint_down_at_start_up_is_recorded_and_its_models_appear_once_it_is_up(no_endpoints):
    port = free_port()
    async with OpenAIFake(models=["up-model"]) as already_up:
        no_endpoints.PARLEY_OPENAI_ENDPOINTS = [
            ("later", f"http://127.0.0.1:{port}/v1", ""), ("early", already_up.base_url, ""),
        ]
        later, early = await refresh()  # as the worker does at its start
        assert not later.ok and "could not connect" in later.error
        assert early.ok and early.listed == 1  # one endpoint down does not hold up the others
        status = await status_of("later")
        assert status.ok is False and status.checked_at is not None and status.last_ok_at is None
        assert set(await offered_names()) == {"parley-demo", "early/up-model"}

        fake = OpenAIFake(models=["late-model"])
        await fake.start(port)
        try:
            later, _ = await refresh()  # the next scheduled refresh
            assert later.ok and later.added == 1
            assert set(await offered_names()) == {"parley-demo", "early/up-model", "later/late-model"}
            status = await status_of("later")
            assert status.ok and status.error == "" and status.last_ok_at is not None
        finally:
            await fake.stop()


async def test_the_refresh_task_reads_every_endpoint(no_endpoints):
    from chat.tasks import refresh_models

    async with OpenAIFake(models=["m1"]) as fake:
        no_endpoints.PARLEY_OPENAI_ENDPOINTS = [("one", fake.base_url, ""), ("two", f"http://127.0.0.1:{free_port()}/v1", "")]
        assert await sync_to_async(refresh_models)() == 1
        assert fake.listings == 1 and "one/m1" in await offered_names()


def test_a_list_naming_a_model_twice_or_a_taken_or_overlong_name_is_read_safely(no_endpoints):

    from providers.endpoints import Endpoint
    from providers.listing import Listed

    ChatModel.objects.create(name="hand-made", label="Mine", provider="openai", base_url="http://127.0.0.1:9/v1")
    ChatModel.objects.create(name="adopted", label="Adopted", provider="openai")  # added by hand for the default endpoint
    endpoint = Endpoint("openai", "openai", "http://127.0.0.1:8080/v1")
    listed = [Listed("dup", "dup"), Listed("dup", "dup"), Listed("hand-made", "hand-made"), Listed("x" * 101, "long"),
              Listed("adopted", "adopted")]
    outcome = discovery.store(endpoint, listed)
    assert (outcome.ok, outcome.listed, outcome.added) == (True, 2, 2)
    assert "hand-made" in str(outcome) and "left out" in str(outcome)
    mine = ChatModel.objects.get(name="hand-made")
    assert (mine.endpoint, mine.base_url) == ("", "http://127.0.0.1:9/v1")  # an admin's own row is left alone
    assert ChatModel.objects.get(name="adopted").endpoint == "openai" and ChatModel.objects.filter(name="dup").count() == 1


def test_new_models_can_wait_for_an_admin_to_enable_them(no_endpoints):

    from providers.endpoints import Endpoint
    from providers.listing import Listed

    no_endpoints.OPENAI_BASE_URL = "http://127.0.0.1:8080/v1"
    endpoint = Endpoint("openai", "openai", "http://127.0.0.1:8080/v1")
    discovery.store(endpoint, [Listed("first", "first")])
    no_endpoints.PARLEY_NEW_MODELS_ENABLED = False
    discovery.store(endpoint, [Listed("first", "first"), Listed("second", "second")])
    assert set(ChatModel.objects.offered().values_list("name", flat=True)) == {"parley-demo", "first"}
    assert not ChatModel.objects.get(name="second").enabled and ChatModel.objects.get(name="second").available
