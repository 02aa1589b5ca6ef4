"""A conversation that took a preset as offered follows it: each reply gets the preset's version in
force at the send, and the conversation and the reply record which. One whose text was edited keeps
its own text. Support reads the preset and version of the conversation and of each reply."""

import asyncio

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import Group
from django.db import connection
from django.test import Client

from agents import actions as agent_actions
from agents import runner
from chat.actions import create_conversation
from chat.models import ChatModel, Conversation, Message
from chat.presets import create_preset, resolve_system, revise, roll_back
from chat.replies import regenerate_message, send_message
from support.models import SUPPORT_GROUP
from tests.fakes import Scenario
from tests.fakes.openai_server import OpenAIFake
from tests.helpers import reply_events
from tests.test_prompt_presets import patch_json

pytestmark = pytest.mark.django_db(transaction=True)

PIRATE_1 = "Talk like a pirate."
PIRATE_2 = "Talk like a pirate. Say arr often."
OWN = "Talk like a pirate, but briefly."


@pytest.fixture
def root(django_user_model):
    return django_user_model.objects.create_superuser("root", "root@example.com", "pw-root-123456")


async def send(fake: OpenAIFake, user, conversation_id: int, text: str) -> tuple[dict, str, Message]:
    """Send, read the reply to its end; the conversation as the `message` event had it, the system
    prompt the upstream was sent, and the stored reply."""
    event = await send_message(user, conversation_id, text)
    await reply_events(user, event["assistant_message"]["id"])
    sent = fake.last_reply.json["messages"]
    assert sent[0]["role"] == "system" and sent[-1] == {"role": "user", "content": text}
    return event["conversation"], sent[0]["content"], await Message.objects.aget(pk=event["assistant_message"]["id"])


async def test_a_following_conversation_gets_each_new_version_and_an_edited_one_keeps_its_text(alice, root, settings):
    async with OpenAIFake(Scenario(tokens=3)) as fake:
        settings.OPENAI_BASE_URL, settings.OPENAI_API_KEY, settings.PROVIDER_MAX_RETRIES = fake.base_url, "sk-test", 0
        await ChatModel.objects.acreate(name="fake-gpt", label="Fake GPT", provider="openai", base_url=fake.base_url)
        pirate = await sync_to_async(create_preset)("Pirate", PIRATE_1, by=root)
        following = await sync_to_async(create_conversation)(alice, "fake-gpt", preset=pirate.pk)
        edited = await sync_to_async(create_conversation)(alice, "fake-gpt", system_prompt=OWN, preset=pirate.pk)
        assert edited.preset_id == pirate.pk and edited.preset_version_id is None

        shown, system, reply = await send(fake, alice, following.pk, "Hello")
        assert system == PIRATE_1 and shown["preset_version"] == 1
        assert reply.routing["preset"] == {"id": pirate.pk, "name": "Pirate", "version": 1, "edited": False}

        await sync_to_async(revise)(pirate, PIRATE_2, by=root, note="More arr")
        shown, system, reply = await send(fake, alice, following.pk, "Again")
        assert system == PIRATE_2 and shown["preset_version"] == 2 and shown["system_prompt"] == PIRATE_2
        assert reply.routing["preset"]["version"] == 2
        stored = await Conversation.objects.select_related("preset_version").aget(pk=following.pk)
        assert (stored.preset_version.number, stored.system_prompt) == (2, PIRATE_2)

        shown, system, reply = await send(fake, alice, edited.pk, "Hello")
        assert system == OWN and shown["preset_version"] is None and shown["system_prompt"] == OWN
        assert reply.routing["preset"] == {"id": pirate.pk, "name": "Pirate", "version": None, "edited": True}
        assert (await Conversation.objects.aget(pk=edited.pk)).system_prompt == OWN

        await sync_to_async(roll_back)(pirate, 1, by=root)  # in force again, as version 3
        shown, system, reply = await send(fake, alice, following.pk, "Once more")
        assert system == PIRATE_1 and shown["preset_version"] == 3 and reply.routing["preset"]["version"] == 3
        # A regenerate is a send too: it gets the version in force now.
        await sync_to_async(revise)(pirate, PIRATE_2, by=root)
        event = await regenerate_message(alice, reply.pk)
        await reply_events(alice, event["assistant_message"]["id"])
        assert fake.last_reply.json["messages"][0]["content"] == PIRATE_2 and event["conversation"]["preset_version"] == 4


async def test_a_conversation_without_a_preset_sends_its_own_text_and_records_none(alice, settings):
    async with OpenAIFake(Scenario(tokens=3)) as fake:
        settings.OPENAI_BASE_URL, settings.OPENAI_API_KEY, settings.PROVIDER_MAX_RETRIES = fake.base_url, "sk-test", 0
        await ChatModel.objects.acreate(name="fake-gpt", label="Fake GPT", provider="openai", base_url=fake.base_url)
        conversation = await sync_to_async(create_conversation)(alice, "fake-gpt", system_prompt="Be kind.")
        shown, system, reply = await send(fake, alice, conversation.pk, "Hello")
        assert system == "Be kind." and shown["preset"] is None and shown["preset_version"] is None
        assert "preset" not in reply.routing


def test_a_deleted_preset_leaves_its_conversations_the_text_they_last_got(alice, root):
    pirate = create_preset("Pirate", PIRATE_1, by=root)
    conversation = create_conversation(alice, preset=pirate.pk)
    pirate.delete()
    conversation.refresh_from_db()
    assert (conversation.preset_id, conversation.preset_version_id, conversation.system_prompt) == (None, None, PIRATE_1)
    assert resolve_system(conversation).text == PIRATE_1 and resolve_system(conversation).label == ""


def test_the_chat_page_shows_a_following_conversation_the_text_its_next_reply_gets(alice, alice_client, root):
    pirate = create_preset("Pirate", PIRATE_1, by=root)
    conversation = create_conversation(alice, preset=pirate.pk)
    revise(pirate, PIRATE_2, by=root)
    page = alice_client.get(f"/c/{conversation.pk}/").content.decode()
    assert f">{PIRATE_2}</textarea>" in page
    # Saved unchanged from that page, it still follows, now from the version shown.
    saved = patch_json(alice_client, f"/api/conversations/{conversation.pk}/", {"system_prompt": PIRATE_2, "preset": pirate.pk}).json()
    assert saved["preset_version"] == 2 and saved["system_prompt"] == PIRATE_2
    # An API client that saves the copy it last read (version 2's, with version 3 in force) keeps following too.
    other = create_conversation(alice, preset=pirate.pk)
    revise(pirate, PIRATE_1, by=root)
    kept = patch_json(alice_client, f"/api/conversations/{other.pk}/", {"system_prompt": PIRATE_2, "preset": pirate.pk}).json()
    assert kept["preset_version"] == 2 and kept["system_prompt"] == PIRATE_2


def test_an_agent_run_of_a_following_conversation_gets_the_version_in_force(alice, root, settings, monkeypatch):
    monkeypatch.setattr(agent_actions, "enqueue_run", lambda run_id: None)

    def start_and_work(conversation_id: int):
        try:
            run = agent_actions.start_run(alice, conversation_id, "Say hello")
            runner.execute(run.pk, "task-1")
        finally:
            connection.close()

    async def scenario():
        async with OpenAIFake(Scenario(tokens=4)) as fake:
            settings.OPENAI_BASE_URL, settings.OPENAI_API_KEY = fake.base_url, "sk-test"
            await ChatModel.objects.acreate(name="fake-gpt", label="Fake", provider="openai", base_url=fake.base_url)
            pirate = await sync_to_async(create_preset)("Pirate", PIRATE_1, by=root)
            conversation = await sync_to_async(create_conversation)(alice, "fake-gpt", preset=pirate.pk)
            await sync_to_async(revise)(pirate, PIRATE_2, by=root)
            await asyncio.to_thread(start_and_work, conversation.pk)
            return fake.requests

    requests = asyncio.run(scenario())
    assert requests[0].json["messages"][0]["role"] == "system"
    assert requests[0].json["messages"][0]["content"].startswith(PIRATE_2 + "\n\n")


async def test_support_reads_the_preset_and_version_of_the_conversation_and_of_each_reply(alice, root, settings, django_user_model):
    async with OpenAIFake(Scenario(tokens=3)) as fake:
        settings.OPENAI_BASE_URL, settings.OPENAI_API_KEY, settings.PROVIDER_MAX_RETRIES = fake.base_url, "sk-test", 0
        await ChatModel.objects.acreate(name="fake-gpt", label="Fake GPT", provider="openai", base_url=fake.base_url)
        pirate = await sync_to_async(create_preset)("Pirate <crew>", PIRATE_1, by=root)
        conversation = await sync_to_async(create_conversation)(alice, "fake-gpt", preset=pirate.pk)
        _, _, first = await send(fake, alice, conversation.pk, "Hello")
        await sync_to_async(revise)(pirate, PIRATE_2, by=root)
        _, _, second = await send(fake, alice, conversation.pk, "Again")
        await sync_to_async(revise)(pirate, PIRATE_1 + " Always.", by=root)  # version 3: not yet used

    def read_as_support() -> tuple[str, dict, str]:
        sam = django_user_model.objects.create_user("sam", password="sam-password-123")
        sam.groups.add(Group.objects.get(name=SUPPORT_GROUP))
        client = Client()
        client.force_login(sam)
        page = client.get(f"/support/c/{conversation.pk}/").content.decode()
        data = client.get(f"/api/support/conversations/{conversation.pk}/").json()
        markdown = client.get(f"/support/c/{conversation.pk}/export.md").content.decode()
        return page, data, markdown

    page, data, markdown = await sync_to_async(read_as_support)()
    header = page[page.index('id="conversation-preset"'):]
    assert header.startswith('id="conversation-preset">Pirate &lt;crew&gt;, version 2 (version 3 in force now: the next reply gets it)</dd>')
    assert "<crew>" not in page
    first_article = page[page.index(f'id="m{first.pk}"'):page.index(f'id="m{second.pk}"')]
    second_article = page[page.index(f'id="m{second.pk}"'):]
    assert '<dd class="msg-preset">Pirate &lt;crew&gt;, version 1</dd>' in first_article
    assert '<dd class="msg-preset">Pirate &lt;crew&gt;, version 2</dd>' in second_article
    assert data["preset"] == {"id": pirate.pk, "name": "Pirate <crew>", "version": 2, "edited": False, "in_force": 3}
    replies = [message for message in data["messages"] if message["role"] == "assistant"]
    assert [reply["preset"]["version"] for reply in replies] == [1, 2]
    assert "- Preset: Pirate <crew>, version 2 (version 3 in force now" in markdown
    assert "preset Pirate <crew>, version 1" in markdown


def test_support_reads_an_edited_conversation_as_its_own_text(alice, root, django_user_model):
    pirate = create_preset("Pirate", PIRATE_1, by=root)
    conversation = create_conversation(alice, system_prompt=OWN, preset=pirate.pk)
    sam = django_user_model.objects.create_user("sam", password="sam-password-123")
    sam.groups.add(Group.objects.get(name=SUPPORT_GROUP))
    client = Client()
    client.force_login(sam)
    page = client.get(f"/support/c/{conversation.pk}/").content.decode()
    assert 'id="conversation-preset">Pirate, its text edited by the user</dd>' in page
    plain = create_conversation(alice, system_prompt="Be kind.")
    assert 'id="conversation-preset"' not in client.get(f"/support/c/{plain.pk}/").content.decode()
