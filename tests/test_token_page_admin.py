"""Admins see every token (never its secret nor its hash), filter by state and scope, and revoke."""

from datetime import timedelta

import pytest
from django.contrib.admin.models import LogEntry
from django.utils import timezone

from accounts.models import ApiToken

pytestmark = pytest.mark.django_db

URL = "/admin/accounts/apitoken/"


@pytest.fixture
def tokens(alice, bob):
    live, live_raw = ApiToken.issue(alice, "live one", scopes=["chat", "gateway"])
    expired, _ = ApiToken.issue(alice, "expired one", scopes=["read"])
    ApiToken.objects.filter(pk=expired.pk).update(expires=timezone.now() - timedelta(days=1))
    revoked, _ = ApiToken.issue(bob, "revoked one", scopes=["gateway"])
    revoked.revoke()
    return {"live": (live, live_raw), "expired": expired, "revoked": revoked}


def listed(client, **query) -> set[str]:
    response = client.get(URL, query)
    assert response.status_code == 200
    return {token.name for token in response.context["cl"].result_list}


def test_the_list_shows_scopes_and_state_but_no_secret(admin_client, tokens):
    live, raw = tokens["live"]
    page = admin_client.get(URL).content.decode()
    assert "chat, gateway" in page and "expired" in page and "revoked" in page
    detail = admin_client.get(f"{URL}{live.pk}/change/").content.decode()
    assert live.prefix in detail
    assert raw not in page + detail and live.token_hash not in page + detail


def test_it_filters_by_state_and_scope(admin_client, tokens):
    assert listed(admin_client, state="live") == {"live one"}
    assert listed(admin_client, state="expired") == {"expired one"}
    assert listed(admin_client, state="revoked") == {"revoked one"}
    assert listed(admin_client, scope="gateway") == {"live one", "revoked one"}
    assert listed(admin_client, scope="read") == {"expired one"}


def test_the_revoke_action_refuses_the_token_at_once_and_is_logged(admin_client, tokens):
    live, raw = tokens["live"]
    assert ApiToken.find(raw) is not None
    response = admin_client.post(URL, {"action": "revoke", "_selected_action": [live.pk, tokens["revoked"].pk]})
    assert response.status_code == 302
    assert ApiToken.find(raw) is None
    live.refresh_from_db()
    assert live.revoked is not None
    assert LogEntry.objects.filter(object_id=str(live.pk), change_message="Revoked").count() == 1
    assert not LogEntry.objects.filter(object_id=str(tokens["revoked"].pk)).exists()


def test_admins_cannot_make_or_edit_a_token(admin_client, tokens):
    live, _ = tokens["live"]
    assert admin_client.get(f"{URL}add/").status_code == 403
    admin_client.post(f"{URL}{live.pk}/change/", {"name": "renamed", "scopes": '["chat","read","gateway"]'})
    live.refresh_from_db()
    assert live.name == "live one" and live.scopes == ["chat", "gateway"]
