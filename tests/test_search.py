"""Searching one's own conversations: titles and message text, snippets with marked matches, escaped first."""

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from chat.actions import create_conversation
from chat.models import Message
from chat.search import excerpt, highlighted

pytestmark = pytest.mark.django_db


@pytest.fixture
def conversations(alice, bob):
    by_title = create_conversation(alice, title="Penguin facts")
    by_text = create_conversation(alice, title="Birds")
    Message.objects.create(conversation=by_text, role="user", content="Tell me about birds.")
    Message.objects.create(conversation=by_text, role="assistant", content="The emperor PENGUIN dives to 500 m <b>deep</b>.")
    create_conversation(alice, title="Unrelated")
    bobs = create_conversation(bob, title="Bob's penguin notes")
    Message.objects.create(conversation=bobs, role="user", content="penguin")
    return by_title, by_text


def results(client: Client, query: str) -> list[dict]:
    response = client.get("/api/conversations/", {"q": query})
    assert response.status_code == 200
    return response.json()["results"]


def test_titles_and_message_text_match_and_never_other_users(alice_client, conversations):
    by_title, by_text = conversations
    found = results(alice_client, "penguin")
    assert {result["id"] for result in found} == {by_title.pk, by_text.pk}
    assert results(alice_client, "nothing like this") == []


def test_results_carry_a_highlighted_snippet(alice_client, conversations):
    by_title, by_text = conversations
    found = {result["id"]: result["match"] for result in results(alice_client, "penguin")}
    assert found[by_title.pk]["title_html"] == "<mark>Penguin</mark> facts"
    assert found[by_title.pk]["snippet"] is None
    text_hit = found[by_text.pk]
    assert text_hit["snippet"] == "The emperor PENGUIN dives to 500 m <b>deep</b>."
    assert text_hit["highlights"]["snippet"] == [[12, 19]]
    # Escaped first, then marked: the <b> of the text is text.
    assert text_hit["snippet_html"] == "The emperor <mark>PENGUIN</mark> dives to 500 m &lt;b&gt;deep&lt;/b&gt;."


def test_the_sidebar_shows_marked_matches_and_escapes_the_text(alice_client, conversations):
    page = alice_client.get("/conversations/", {"q": "penguin"}).content.decode()
    assert "<mark>Penguin</mark> facts" in page
    assert "The emperor <mark>PENGUIN</mark> dives to 500 m &lt;b&gt;deep&lt;/b&gt;." in page
    assert "<b>deep</b>" not in page
    assert "Bob" not in page and "Unrelated" not in page
    assert "mentions “zebra”" in alice_client.get("/conversations/", {"q": "zebra"}).content.decode()


def test_a_query_is_marked_as_text_too(alice):
    conversation = create_conversation(alice, title="About <b> tags")
    assert str(highlighted(conversation.title, "<b>")) == "About <mark>&lt;b&gt;</mark> tags"
    assert str(highlighted("x <script>", "nothing")) == "x &lt;script&gt;"


def test_snippets_are_cut_around_the_match():
    text = "start " + "filler " * 50 + "needle" + " tail" * 50
    cut = excerpt(text, "needle")
    assert "needle" in cut and cut.startswith("…") and cut.endswith("…") and len(cut) <= 122


def test_searching_is_one_query_however_many_conversations_match(alice, alice_client):
    for index in range(15):
        conversation = create_conversation(alice, title=f"Chat {index}")
        Message.objects.create(conversation=conversation, role="user", content=f"about otters {index}")
    with CaptureQueriesContext(connection) as queries:
        assert len(results(alice_client, "otters")) == 15
    conversation_queries = [query for query in queries if "chat_conversation" in query["sql"]]
    assert len(conversation_queries) == 2  # the page and its count
