"""The API reads JSON bodies only: a form or plain text gets 415 in the JSON error shape, through real daphne.

A cookie session's CSRF check reads the form fields of a multipart POST, after which the raw body
can no longer be read: that request must be refused as cleanly as any other non-JSON body.
"""

import json

import httpx
import pytest
from django.test import Client

from chat.models import ChatModel, Conversation, Message

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def browser(live_app, alice):
    """An HTTP client holding alice's session cookie and the CSRF token the chat page set."""
    client = Client()
    client.force_login(alice)
    session = httpx.Client(base_url=live_app.url, cookies={"sessionid": client.cookies["sessionid"].value}, timeout=10)
    page = session.get("/")
    assert page.status_code == 200
    session.headers["X-CSRFToken"] = session.cookies["csrftoken"]
    yield session
    session.close()


@pytest.fixture
def conversation(alice) -> Conversation:
    return Conversation.objects.create(owner=alice, title="Kept", model=ChatModel.objects.get(name="parley-demo"))


BODIES = {
    "multipart": {"files": {"content": (None, "hello /words 2"), "title": (None, "Form")}},
    "multipart with the token as a field": {"files": {"content": (None, "hello /words 2"), "title": (None, "Form")}, "csrf_field": True},
    "urlencoded": {"data": {"content": "hello /words 2", "title": "Form"}},
    "JSON as text/plain": {"content": json.dumps({"content": "hello /words 2", "title": "Form"}), "headers": {"Content-Type": "text/plain"}},
}


def request(browser: httpx.Client, method: str, url: str, body: dict) -> httpx.Response:
    body = dict(body)
    if body.pop("csrf_field", False):
        token = browser.headers.pop("X-CSRFToken")
        body["files"] = {**body["files"], "csrfmiddlewaretoken": (None, token)}
    return browser.request(method, url, **body)


def assert_unsupported(response: httpx.Response) -> None:
    assert response.status_code == 415, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "error": {"code": "unsupported_media_type", "text": "Send the body as JSON (Content-Type: application/json).", "retry_after": None}
    }


@pytest.mark.parametrize("body", BODIES.values(), ids=BODIES.keys())
def test_a_form_creating_a_conversation_gets_415(browser, alice, body):
    assert_unsupported(request(browser, "POST", "/api/conversations/", body))
    assert not Conversation.objects.exists()


@pytest.mark.parametrize("body", BODIES.values(), ids=BODIES.keys())
def test_a_form_sending_a_message_gets_415(browser, conversation, body):
    assert_unsupported(request(browser, "POST", f"/api/conversations/{conversation.pk}/messages", body))
    assert not Message.objects.exists()


# Django's CSRF check reads a form field only on POST: a PATCH must carry the token in the header.
@pytest.mark.parametrize("body", [body for body in BODIES.values() if "csrf_field" not in body], ids=[k for k, body in BODIES.items() if "csrf_field" not in body])
def test_a_form_changing_a_conversation_gets_415(browser, conversation, body):
    assert_unsupported(request(browser, "PATCH", f"/api/conversations/{conversation.pk}/", body))
    conversation.refresh_from_db()
    assert conversation.title == "Kept"


def test_json_with_the_same_session_and_token_is_served(browser, conversation):
    created = browser.post("/api/conversations/", json={"title": "From JSON"})
    assert created.status_code == 201, created.text
    sent = browser.post(f"/api/conversations/{conversation.pk}/messages", json={"content": "hello /words 2"})
    assert sent.status_code == 201, sent.text
    renamed = browser.patch(f"/api/conversations/{conversation.pk}/", json={"title": "Renamed"})
    assert renamed.status_code == 200 and renamed.json()["title"] == "Renamed"


def test_a_body_without_a_content_type_or_no_body_at_all_still_works(browser):
    untyped = browser.post("/api/conversations/", content=b'{"title": "Untyped"}')
    assert "content-type" not in untyped.request.headers
    assert untyped.status_code == 201, untyped.text
    assert untyped.json()["title"] == "Untyped"
    empty = browser.post("/api/conversations/")
    assert empty.status_code == 201, empty.text
    assert Conversation.objects.count() == 2
