"""The middleware stack as daphne runs it (async mode): sessions, CSRF, messages and headers still
work with hooks that run inline, and a request makes no thread round trip per hook."""

import json

import pytest
from asgiref import sync
from django.test import AsyncClient

from accounts.models import ApiToken
from chat.models import ChatModel

pytestmark = pytest.mark.django_db(transaction=True)


async def test_login_through_the_async_stack_saves_the_session(alice):
    client = AsyncClient()
    response = await client.post("/accounts/login/", {"username": "alice", "password": "alice-password-123"})
    assert response.status_code == 302
    assert "sessionid" in response.cookies
    listing = await client.get("/api/conversations/")
    assert listing.status_code == 200, listing.content
    assert listing.json()["results"] == []


async def test_a_cookie_session_post_needs_the_csrf_token(alice):
    client = AsyncClient(enforce_csrf_checks=True)
    await client.aforce_login(alice)
    refused = await client.post("/api/conversations/", json.dumps({"title": "x"}), content_type="application/json")
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "forbidden"
    page = await client.get("/")
    assert page.status_code == 200
    token = page.cookies["csrftoken"].value
    created = await client.post(
        "/api/conversations/", json.dumps({"title": "x"}), content_type="application/json", headers={"X-CSRFToken": token}
    )
    assert created.status_code == 201, created.content


async def test_pages_carry_the_security_headers(alice):
    client = AsyncClient()
    await client.aforce_login(alice)
    page = await client.get("/")
    assert page.headers["X-Frame-Options"] == "DENY"
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert "Cookie" in page.headers["Vary"]


async def test_admin_messages_survive_the_redirect(django_user_model):
    root = await django_user_model.objects.acreate_superuser("root", password="root-pass-123456")
    client = AsyncClient()
    await client.aforce_login(root)
    model = await ChatModel.objects.aget(name="parley-demo")
    form = await client.get(f"/admin/chat/chatmodel/{model.pk}/change/")
    assert form.status_code == 200
    data = {field: value for field, value in form.context["adminform"].form.initial.items() if value is not None}
    data.update(label="Renamed demo", _save="Save")
    for formset in form.context["inline_admin_formsets"]:  # the failover chain's inline, as the page sends it
        data.update({f"{formset.formset.prefix}-{key}": value for key, value in formset.formset.management_form.initial.items()})
    saved = await client.post(f"/admin/chat/chatmodel/{model.pk}/change/", data)
    assert saved.status_code == 302, saved.content[:2000]
    listing = await client.get(saved["Location"])
    assert "was changed successfully" in listing.content.decode()


async def test_an_api_request_makes_no_thread_round_trip_per_middleware_hook(alice, monkeypatch):
    token = (await sync.sync_to_async(ApiToken.issue)(alice, "script"))[1]
    hops: list[str] = []
    original = sync.SyncToAsync.__call__

    async def counting(self, *args, **kwargs):
        hops.append(getattr(self.func, "__qualname__", repr(self.func)))
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(sync.SyncToAsync, "__call__", counting)
    response = await AsyncClient().get("/api/models/", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    # request_started, the token lookup, the sync view, closing the response (request_finished):
    # four. Django's stock classes add one per hook, 17 in all.
    assert len(hops) <= 5, hops
