"""The JSON API: shapes, pagination, bearer tokens, CSRF and one error shape everywhere."""

import json

import pytest
from django.test import Client

from accounts.models import ApiToken
from chat.models import ChatModel, Conversation, Message

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice_token(alice) -> str:
    return ApiToken.issue(alice, "script")[1]


def post_json(client: Client, url: str, data: object, **extra):
    return client.post(url, json.dumps(data), content_type="application/json", **extra)


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert body["error"]["text"]
    return body["error"]


def test_anonymous_requests_are_refused_with_json():
    client = Client()
    for method, url in [("get", "/api/conversations/"), ("post", "/api/conversations/"), ("get", "/api/conversations/1/"),
                        ("post", "/api/conversations/1/messages"), ("post", "/api/messages/1/stop"), ("get", "/api/messages/1/events")]:
        assert_error(getattr(client, method)(url), 401, "not_authenticated")


def test_bad_bearer_token_is_refused():
    client = Client(headers={"Authorization": "Bearer prl_not-a-real-token"})
    assert_error(client.get("/api/conversations/"), 401, "not_authenticated")


def test_create_and_list_conversations_with_a_bearer_token(alice_token):
    client = Client(headers={"Authorization": f"Bearer {alice_token}"})
    response = post_json(client, "/api/conversations/", {"title": "  Trip   plans ", "system_prompt": "Be brief."})
    assert response.status_code == 201
    created = response.json()
    assert created["title"] == "Trip plans"
    assert created["model"] == "parley-demo"
    listed = client.get("/api/conversations/").json()
    assert [c["id"] for c in listed["results"]] == [created["id"]]
    assert listed["count"] == 1


def test_revoked_token_stops_working(alice):
    token, raw = ApiToken.issue(alice, "old")
    token.revoke()
    client = Client(headers={"Authorization": f"Bearer {raw}"})
    assert_error(client.get("/api/conversations/"), 401, "not_authenticated")


def test_token_is_stored_hashed(alice):
    token, raw = ApiToken.issue(alice, "script")
    assert raw not in token.token_hash
    assert ApiToken.objects.filter(token_hash__contains=raw).count() == 0


def test_pagination_and_title_filter(alice_client, alice):
    model = ChatModel.objects.get(name="parley-demo")
    for index in range(45):
        Conversation.objects.create(owner=alice, model=model, title=f"Chat {index}" if index % 2 else f"Recipe {index}")
    first = alice_client.get("/api/conversations/").json()
    assert len(first["results"]) == 20 and first["pages"] == 3 and first["next"] == 2
    last = alice_client.get("/api/conversations/?page=3").json()
    assert len(last["results"]) == 5 and last["next"] is None
    filtered = alice_client.get("/api/conversations/?q=recipe").json()
    assert filtered["count"] == 23
    assert_error(alice_client.get("/api/conversations/?page=9"), 404, "not_found")
    assert_error(alice_client.get("/api/conversations/?page=x"), 404, "not_found")


def test_session_clients_need_the_csrf_token(alice):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    assert_error(post_json(client, "/api/conversations/", {}), 403, "forbidden")


def test_invalid_json_and_wrong_types(alice_client):
    response = alice_client.post("/api/conversations/", "{nope", content_type="application/json")
    assert_error(response, 400, "invalid_json")
    assert_error(post_json(alice_client, "/api/conversations/", [1]), 400, "invalid_input")
    assert_error(post_json(alice_client, "/api/conversations/", {"title": 5}), 400, "invalid_input")
    assert_error(post_json(alice_client, "/api/conversations/", {"model": "nope"}), 400, "unknown_model")
    assert Conversation.objects.count() == 0


def test_patch_and_delete(alice_client, alice):
    conversation = Conversation.objects.create(owner=alice, model=ChatModel.objects.get(name="parley-demo"))
    url = f"/api/conversations/{conversation.pk}/"
    response = alice_client.patch(url, json.dumps({"title": "Renamed", "archived": True}), content_type="application/json")
    assert response.status_code == 200
    assert response.json()["title"] == "Renamed" and response.json()["archived"] is True
    bad = alice_client.patch(url, json.dumps({"title": "   "}), content_type="application/json")
    assert_error(bad, 400, "invalid_input")
    assert_error(alice_client.patch(url, json.dumps({"owner": 3}), content_type="application/json"), 400, "invalid_input")
    assert alice_client.delete(url).status_code == 204
    assert not Conversation.objects.filter(pk=conversation.pk).exists()


def test_method_not_allowed_is_json(alice_client):
    assert_error(alice_client.put("/api/conversations/"), 405, "method_not_allowed")
    assert_error(alice_client.get("/api/messages/1/stop"), 405, "method_not_allowed")


def test_conversation_detail_includes_messages(alice_client, alice):
    conversation = Conversation.objects.create(owner=alice, model=ChatModel.objects.get(name="parley-demo"))
    Message.objects.create(conversation=conversation, role="user", content="hi")
    Message.objects.create(conversation=conversation, role="assistant", content="hello", status="complete")
    body = alice_client.get(f"/api/conversations/{conversation.pk}/").json()
    assert [m["content"] for m in body["messages"]] == ["hi", "hello"]
    assert body["messages"][1]["status"] == "complete"


def test_only_configured_providers_are_offered(alice_client, settings):
    settings.OPENAI_API_KEY = ""
    settings.OPENAI_BASE_URL = ""
    settings.ANTHROPIC_API_KEY = ""
    names = [m["name"] for m in alice_client.get("/api/models/").json()["results"]]
    assert names == ["auto", "parley-demo"]  # auto (routing/) while a model is there for it to pick
    ChatModel.objects.create(name="claude-haiku-4-5", label="Claude Haiku 4.5", provider="anthropic", endpoint="anthropic")
    ChatModel.objects.create(name="gpt-4.1", label="GPT-4.1", provider="openai", endpoint="openai")
    assert [m["name"] for m in alice_client.get("/api/models/").json()["results"]] == ["auto", "parley-demo"]
    settings.ANTHROPIC_API_KEY = "sk-ant-test"
    names = [m["name"] for m in alice_client.get("/api/models/").json()["results"]]
    assert "claude-haiku-4-5" in names and "gpt-4.1" not in names
    settings.PARLEY_DEMO_MODEL = False
    names = [m["name"] for m in alice_client.get("/api/models/").json()["results"]]
    assert "parley-demo" not in names


def test_unknown_api_paths_answer_in_the_same_json_shape(alice_client):
    assert_error(alice_client.get("/api/nothing-here/"), 404, "not_found")
    assert_error(alice_client.get("/api/messages/abc/events"), 404, "not_found")


def test_overload_is_refused_fast_with_retry_after(alice_client, alice, settings):
    settings.PARLEY_MAX_GENERATIONS = 0
    conversation = Conversation.objects.create(owner=alice, model=ChatModel.objects.get(name="parley-demo"))
    response = post_json(alice_client, f"/api/conversations/{conversation.pk}/messages", {"content": "hello"})
    error = assert_error(response, 503, "busy")
    assert error["retry_after"] and int(response.headers["Retry-After"]) >= 1
    assert Message.objects.count() == 0


def test_sending_validates_its_body(alice_client, alice):
    conversation = Conversation.objects.create(owner=alice, model=ChatModel.objects.get(name="parley-demo"))
    url = f"/api/conversations/{conversation.pk}/messages"
    assert_error(post_json(alice_client, url, {}), 400, "invalid_input")
    assert_error(post_json(alice_client, url, {"content": "  "}), 400, "empty_message")
    assert_error(post_json(alice_client, url, {"content": "x" * 40_000}), 413, "message_too_long")
    assert_error(alice_client.post(url, "{", content_type="application/json"), 400, "invalid_json")
    assert Message.objects.count() == 0
