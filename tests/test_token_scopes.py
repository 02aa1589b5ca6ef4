"""Each scope opens its own doors, over real HTTP and WebSocket to a live daphne: `chat` the JSON
API and the chat socket, `read` the API's reads alone (the socket sends, so it stays shut), `gateway`
the protocol doors alone; an expired token opens none, and every use marks when it was last used."""

import asyncio
import time
from datetime import timedelta

import httpx
import pytest
import websockets
from django.utils import timezone

from accounts.models import ApiToken
from chat.models import Conversation

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]


def headers(raw: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {raw}"}


def socket_answer(base_url: str, raw: str) -> int | None:
    """None when the chat socket stays open; else the code it was closed with."""

    async def run() -> int | None:
        url = base_url.replace("http", "ws") + "/ws/chat/"
        async with websockets.connect(url, additional_headers=headers(raw)) as ws:
            try:
                await asyncio.wait_for(ws.recv(), 1)
            except TimeoutError:
                return None
            except websockets.ConnectionClosed as closed:
                return closed.rcvd.code if closed.rcvd else 1006
        return None

    return asyncio.run(run())


@pytest.fixture
def conversation(alice) -> Conversation:
    from chat.models import ChatModel

    return Conversation.objects.create(owner=alice, model=ChatModel.objects.filter(enabled=True).first(), title="kept")


def test_a_chat_token_uses_the_api_and_the_socket_but_not_the_gateway(live_app, alice):
    _, raw = ApiToken.issue(alice, "chat", scopes=["chat"])
    assert httpx.get(f"{live_app.url}/api/conversations/", headers=headers(raw)).status_code == 200
    assert httpx.post(f"{live_app.url}/api/conversations/", json={}, headers=headers(raw)).status_code == 201
    assert socket_answer(live_app.url, raw) is None
    refused = httpx.get(f"{live_app.url}/v1/models", headers=headers(raw))
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "insufficient_scope"


def test_a_read_only_token_reads_but_never_writes(live_app, alice, conversation):
    _, raw = ApiToken.issue(alice, "reader", scopes=["read"])
    listed = httpx.get(f"{live_app.url}/api/conversations/", headers=headers(raw))
    assert listed.status_code == 200
    assert [item["id"] for item in listed.json()["results"]] == [conversation.pk]
    assert httpx.get(f"{live_app.url}/api/conversations/{conversation.pk}/", headers=headers(raw)).status_code == 200
    for method, path, body in [
        ("POST", "/api/conversations/", {}),
        ("POST", f"/api/conversations/{conversation.pk}/messages", {"content": "hello"}),
        ("PATCH", f"/api/conversations/{conversation.pk}/", {"title": "changed"}),
        ("DELETE", f"/api/conversations/{conversation.pk}/", None),
    ]:
        response = httpx.request(method, f"{live_app.url}{path}", json=body, headers=headers(raw))
        assert response.status_code == 403, (method, path)
        assert response.json()["error"]["code"] == "insufficient_scope"
    conversation.refresh_from_db()
    assert conversation.title == "kept"
    assert socket_answer(live_app.url, raw) == 4401
    assert httpx.get(f"{live_app.url}/v1/models", headers=headers(raw)).status_code == 403


def test_a_gateway_token_opens_the_gateway_alone(live_app, alice, conversation):
    _, raw = ApiToken.issue(alice, "gateway", scopes=["gateway"])
    models = httpx.get(f"{live_app.url}/v1/models", headers=headers(raw))
    assert models.status_code == 200 and models.json()["object"] == "list"
    for method, path in [("GET", "/api/conversations/"), ("GET", f"/api/conversations/{conversation.pk}/"),
                         ("POST", "/api/conversations/")]:
        response = httpx.request(method, f"{live_app.url}{path}", headers=headers(raw))
        assert response.status_code == 403, (method, path)
        assert response.json()["error"]["code"] == "insufficient_scope"
    assert socket_answer(live_app.url, raw) == 4401


def test_an_expired_token_opens_nothing(live_app, alice):
    token, raw = ApiToken.issue(alice, "every scope", scopes=["chat", "gateway", "read"])
    assert httpx.get(f"{live_app.url}/api/conversations/", headers=headers(raw)).status_code == 200
    ApiToken.objects.filter(pk=token.pk).update(expires=timezone.now() - timedelta(seconds=1))
    refused = httpx.get(f"{live_app.url}/api/conversations/", headers=headers(raw))
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "not_authenticated"
    assert httpx.post(f"{live_app.url}/api/conversations/", json={}, headers=headers(raw)).status_code == 401
    assert socket_answer(live_app.url, raw) == 4401
    gateway = httpx.get(f"{live_app.url}/v1/models", headers=headers(raw))
    assert gateway.status_code == 401
    assert gateway.json()["error"]["code"] == "invalid_api_key"


def last_use_after(token: ApiToken, earlier: object) -> object:
    """The token's last use once it differs from `earlier`: it is written on the deferred threads,
    a moment after the answer (None if it never changed within 5 seconds)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        token.refresh_from_db()
        if token.last_used != earlier:
            return token.last_used
        time.sleep(0.05)
    return None


def test_use_marks_the_token_last_used_once_a_minute(live_app, alice):
    token, raw = ApiToken.issue(alice, "marked", scopes=["read"])
    assert token.last_used is None
    httpx.get(f"{live_app.url}/api/conversations/", headers=headers(raw))
    first = last_use_after(token, None)
    assert first is not None and timezone.now() - first < timedelta(seconds=30)
    httpx.get(f"{live_app.url}/api/conversations/", headers=headers(raw))
    time.sleep(0.5)  # time for a write, had one been asked for
    token.refresh_from_db()
    assert token.last_used == first  # not written again within the minute
    older = first - timedelta(minutes=2)
    ApiToken.objects.filter(pk=token.pk).update(last_used=older)
    httpx.get(f"{live_app.url}/api/conversations/", headers=headers(raw))
    again = last_use_after(token, older)
    assert again is not None and again >= first  # older than a minute: written again
