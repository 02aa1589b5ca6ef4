"""Share links: a read-only snapshot anyone with the link can read, nothing else of the owner's,
owner-only listing and revocation, and a revoked link gone."""

import json
import re

import pytest
from django.test import Client

from chat.models import Conversation, Message
from sharing.models import SharedLink

pytestmark = pytest.mark.django_db


def post_json(client: Client, url: str, data: object | None = None):
    return client.post(url, json.dumps(data) if data is not None else "", content_type="application/json")


@pytest.fixture
def conversation(alice) -> Conversation:
    from chat.actions import create_conversation

    conversation = create_conversation(alice, title="Lisbon trip", system_prompt="Secret system prompt")
    Message.objects.create(conversation=conversation, role="user", content="Where should I eat?")
    Message.objects.create(conversation=conversation, role="assistant", content="Try **Time Out Market**.", model="parley-demo")
    return conversation


@pytest.fixture
def bob_client(bob) -> Client:
    client = Client()
    client.force_login(bob)
    return client


def share(client: Client, conversation: Conversation, data: object | None = None) -> dict:
    response = post_json(client, f"/api/conversations/{conversation.pk}/share", data)
    assert response.status_code == 201, response.content
    return response.json()


def path_of(url: str) -> str:
    return re.sub(r"^https?://[^/]+", "", url)


def test_sharing_answers_an_absolute_url_that_anyone_can_open(alice_client, conversation):
    created = share(alice_client, conversation)
    assert created["url"].startswith("http://testserver/s/")
    assert set(created) >= {"id", "url", "created", "show_owner"} and created["show_owner"] is False
    page = Client().get(path_of(created["url"]))
    assert page.status_code == 200
    html = page.content.decode()
    assert "Lisbon trip" in html and "Where should I eat?" in html and "Try **Time Out Market**." in html
    assert page["X-Robots-Tag"].startswith("noindex")
    assert page["Referrer-Policy"] == "no-referrer"
    assert '<html lang="en">' in html


def test_the_snapshot_is_frozen_as_of_sharing(alice_client, conversation):
    url = path_of(share(alice_client, conversation)["url"])
    Message.objects.create(conversation=conversation, role="user", content="A later question")
    conversation.title = "Renamed later"
    conversation.save()
    html = Client().get(url).content.decode()
    assert "A later question" not in html and "Renamed later" not in html
    assert "Where should I eat?" in html


def test_a_reply_still_being_written_is_left_out(alice_client, conversation):
    Message.objects.create(conversation=conversation, role="assistant", content="half a rep", status="streaming")
    url = path_of(share(alice_client, conversation)["url"])
    html = Client().get(url).content.decode()
    assert "half a rep" not in html
    assert "still being written" in html


def test_the_page_gives_nothing_else_of_the_owners(alice, alice_client, conversation):
    other = Conversation.objects.create(owner=alice, title="Private diary", model=conversation.model)
    Message.objects.create(conversation=other, role="user", content="my diary entry")
    html = Client().get(path_of(share(alice_client, conversation)["url"])).content.decode()
    assert "alice" not in html.lower()
    assert "Secret system prompt" not in html
    assert "Private diary" not in html and "my diary entry" not in html
    assert f"/c/{conversation.pk}/" not in html and f'"conversation": {conversation.pk}' not in html
    embedded = json.loads(re.search(r'<script id="shared-messages" type="application/json">(.*?)</script>', html, re.S).group(1))
    assert all(set(message) == {"role", "content", "model", "created", "status"} for message in embedded)
    # The anonymous visitor cannot reach the owner's API either.
    assert Client().get(f"/api/conversations/{conversation.pk}/").status_code == 401


def test_the_owner_is_named_only_when_chosen(alice, alice_client, conversation):
    alice.first_name, alice.last_name = "Alice", "Liddell"
    alice.save()
    html = Client().get(path_of(share(alice_client, conversation, {"show_owner": True})["url"])).content.decode()
    assert "shared by Alice Liddell" in html
    assert "Liddell" not in Client().get(path_of(share(alice_client, conversation)["url"])).content.decode()


def test_owner_lists_and_revokes_and_a_revoked_link_is_404(alice_client, conversation):
    first, second = share(alice_client, conversation), share(alice_client, conversation)
    listed = alice_client.get(f"/api/conversations/{conversation.pk}/shares").json()["results"]
    assert [link["id"] for link in listed] == [second["id"], first["id"]]
    assert [link["id"] for link in alice_client.get("/api/shares/").json()["results"]] == [second["id"], first["id"]]
    assert alice_client.delete(f"/api/shares/{first['id']}").status_code == 204
    gone = Client().get(path_of(first["url"]))
    assert gone.status_code == 404 and "Lisbon" not in gone.content.decode()
    assert Client().get(path_of(second["url"])).status_code == 200
    assert [link["id"] for link in alice_client.get("/api/shares/").json()["results"]] == [second["id"]]
    assert alice_client.delete(f"/api/shares/{first['id']}").status_code == 404  # already revoked


def test_unknown_links_are_404(alice_client, conversation):
    share(alice_client, conversation)
    assert Client().get("/s/not-a-real-token").status_code == 404
    assert Client().get("/s/" + "x" * 500).status_code == 404


def test_other_users_cannot_share_list_or_revoke(alice_client, bob_client, conversation):
    link = share(alice_client, conversation)
    for response in [
        post_json(bob_client, f"/api/conversations/{conversation.pk}/share"),
        bob_client.get(f"/api/conversations/{conversation.pk}/shares"),
        bob_client.delete(f"/api/shares/{link['id']}"),
    ]:
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    assert bob_client.get("/api/shares/").json()["results"] == []
    assert Client().get(path_of(link["url"])).status_code == 200  # still live
    assert post_json(Client(), f"/api/conversations/{conversation.pk}/share").status_code == 401


def test_bad_bodies_are_refused(alice_client, conversation):
    for body in [{"show_owner": "yes"}, {"owner": True}, [1]]:
        response = post_json(alice_client, f"/api/conversations/{conversation.pk}/share", body)
        assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_input"
    assert SharedLink.objects.count() == 0


def test_active_links_are_capped_and_creation_is_rate_limited(alice_client, conversation, settings):
    settings.PARLEY_SHARES_MAX_ACTIVE = 2
    first = share(alice_client, conversation)
    share(alice_client, conversation)
    refused = post_json(alice_client, f"/api/conversations/{conversation.pk}/share")
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "too_many_shares"
    alice_client.delete(f"/api/shares/{first['id']}")
    share(alice_client, conversation)
    settings.PARLEY_SHARES_MAX_ACTIVE = 100
    settings.PARLEY_SHARES_PER_HOUR = 3
    limited = post_json(alice_client, f"/api/conversations/{conversation.pk}/share")
    assert limited.status_code == 429 and int(limited["Retry-After"]) > 3000


def test_deleting_the_conversation_ends_its_links(alice_client, conversation):
    url = path_of(share(alice_client, conversation)["url"])
    conversation.delete()
    assert Client().get(url).status_code == 404
