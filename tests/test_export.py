"""Exporting one's own conversation: Markdown of the messages shown, JSON of every message, as downloads."""

import json

import pytest
from django.test import Client

from chat.actions import create_conversation
from chat.models import Message

pytestmark = pytest.mark.django_db


@pytest.fixture
def conversation(alice):
    conversation = create_conversation(alice, title="Soup <recipes>", system_prompt="Answer as a chef.")
    question = Message.objects.create(conversation=conversation, role="user", content="How do I make <b>stock</b>?")
    Message.objects.create(
        conversation=conversation, role="assistant", parent=question, content="Simmer **bones** for hours.", model="parley-demo"
    )
    return conversation


def test_markdown_export_is_a_download_of_the_messages(alice_client, conversation):
    response = alice_client.get(f"/api/conversations/{conversation.pk}/export?format=md")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/markdown; charset=utf-8"
    assert response["Content-Disposition"].startswith("attachment;") and f"soup-recipes-{conversation.pk}.md" in response["Content-Disposition"]
    assert response["X-Content-Type-Options"] == "nosniff"
    text = response.content.decode()
    assert text.startswith("# Soup <recipes>\n")
    assert "## System prompt\n\nAnswer as a chef." in text
    you, assistant = text.index("## You"), text.index("## Assistant (parley-demo)")
    assert you < text.index("How do I make <b>stock</b>?") < assistant < text.index("Simmer **bones** for hours.")


def test_json_export_holds_every_message_with_its_parent(alice_client, conversation):
    response = alice_client.get(f"/api/conversations/{conversation.pk}/export?format=json")
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    assert response["Content-Disposition"].startswith("attachment;") and response["X-Content-Type-Options"] == "nosniff"
    data = json.loads(response.content)
    assert data["conversation"]["title"] == "Soup <recipes>" and data["conversation"]["system_prompt"] == "Answer as a chef."
    question, answer = data["messages"]
    assert question["role"] == "user" and question["parent"] is None and question["content"] == "How do I make <b>stock</b>?"
    assert answer["parent"] == question["id"] and answer["content"] == "Simmer **bones** for hours."


@pytest.mark.parametrize("query", ["", "?format=", "?format=pdf", "?format=MD"])
def test_a_bad_format_is_a_clear_error(alice_client, conversation, query):
    response = alice_client.get(f"/api/conversations/{conversation.pk}/export{query}")
    assert response.status_code == 400
    assert response.json()["error"] == {"code": "invalid_input", "text": "format must be md or json.", "retry_after": None}


def test_only_the_owner_can_export(bob, conversation):
    client = Client()
    client.force_login(bob)
    for fmt in ("md", "json"):
        response = client.get(f"/api/conversations/{conversation.pk}/export?format={fmt}")
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    assert Client().get(f"/api/conversations/{conversation.pk}/export?format=md").status_code == 401
