"""A conversation's system prompt, written by hand or taken from a preset, reaches the model."""

import json

import pytest
from asgiref.sync import sync_to_async
from django.test import Client

from chat.models import ChatModel, Conversation
from chat.presets import create_preset
from chat.replies import send_message
from tests.fakes import Scenario
from tests.fakes.openai_server import OpenAIFake
from tests.helpers import reply_events


def patch_json(client: Client, url: str, data: object):
    return client.patch(url, json.dumps(data), content_type="application/json")


@pytest.fixture
def presets(db):
    return (
        create_preset("Pirate", "Talk like a pirate.", sort=2),
        create_preset("Brief", "Answer in one sentence.", sort=1),
        create_preset("Retired", "Old.", enabled=False),
    )


@pytest.mark.django_db
def test_enabled_presets_are_listed_in_order(alice_client, presets):
    pirate, brief, _ = presets
    listed = alice_client.get("/api/prompt-presets/").json()["results"]
    assert listed == [{"id": brief.pk, "name": "Brief", "text": "Answer in one sentence.", "version": 1},
                      {"id": pirate.pk, "name": "Pirate", "text": "Talk like a pirate.", "version": 1}]
    assert Client().get("/api/prompt-presets/").status_code == 401


@pytest.mark.django_db
def test_a_preset_fills_the_prompt_and_is_remembered(alice_client, presets):
    pirate, _, retired = presets
    created = alice_client.post("/api/conversations/", json.dumps({"preset": pirate.pk}), content_type="application/json").json()
    # Taken as offered: it follows the preset, from its version 1.
    assert created["system_prompt"] == "Talk like a pirate." and created["preset"] == pirate.pk and created["preset_version"] == 1
    url = f"/api/conversations/{created['id']}/"
    as_offered = patch_json(alice_client, url, {"system_prompt": "  Talk like a pirate.\n", "preset": pirate.pk}).json()
    assert as_offered["preset_version"] == 1
    edited = patch_json(alice_client, url, {"system_prompt": "Talk like a pirate, briefly.", "preset": pirate.pk}).json()
    # Edited by hand: its own copy, noting the preset it started from, following no version.
    assert edited["system_prompt"] == "Talk like a pirate, briefly." and edited["preset"] == pirate.pk
    assert edited["preset_version"] is None
    by_hand = patch_json(alice_client, url, {"system_prompt": "Be kind."}).json()
    assert by_hand["system_prompt"] == "Be kind." and by_hand["preset"] is None and by_hand["preset_version"] is None
    for bad in [{"preset": retired.pk}, {"preset": "pirate"}, {"system_prompt": "x" * 20_001}, {"system_prompt": 5}]:
        response = patch_json(alice_client, url, bad)
        assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_input"
    assert Conversation.objects.get(pk=created["id"]).system_prompt == "Be kind."
    followed = patch_json(alice_client, url, {"preset": pirate.pk}).json()
    assert followed["system_prompt"] == "Talk like a pirate." and followed["preset_version"] == 1
    listed = alice_client.get("/api/conversations/").json()["results"]
    assert [(item["id"], item["preset"], item["preset_version"]) for item in listed] == [(created["id"], pirate.pk, 1)]
    cleared = patch_json(alice_client, url, {"system_prompt": "", "preset": None}).json()
    assert cleared["system_prompt"] == "" and cleared["preset"] is None and cleared["preset_version"] is None


@pytest.mark.django_db(transaction=True)
async def test_the_system_prompt_set_through_the_api_reaches_the_upstream(alice, settings):
    async with OpenAIFake(Scenario(tokens=5)) as fake:
        settings.OPENAI_BASE_URL = fake.base_url
        settings.OPENAI_API_KEY = "sk-test"
        settings.PROVIDER_MAX_RETRIES = 0
        model = await ChatModel.objects.acreate(name="fake-gpt", label="Fake GPT", provider="openai", base_url=fake.base_url)
        conversation = await Conversation.objects.acreate(owner=alice, model=model)
        client = Client()
        await sync_to_async(client.force_login)(alice)
        response = await sync_to_async(patch_json)(client, f"/api/conversations/{conversation.pk}/", {"system_prompt": "Talk like a pirate."})
        assert response.status_code == 200
        event = await send_message(alice, conversation.pk, "Hello")
        await reply_events(alice, event["assistant_message"]["id"])
        sent = fake.last_reply.json["messages"]
        assert sent[0] == {"role": "system", "content": "Talk like a pirate."}
        assert sent[-1] == {"role": "user", "content": "Hello"}
