"""The tokens page: a token is made with its scopes, expiry, call storage and web origins, checked
on the server with errors said in plain words, and listed with all of them."""

import re
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from accounts.models import ApiToken

pytestmark = pytest.mark.django_db

URL = "/accounts/tokens/"


def create(client, **fields):
    data = {"name": "script", "scopes": ["chat"], "expiry": "", **fields}
    return client.post(URL, data)


def test_it_makes_a_token_with_every_setting(alice_client, alice):
    day = (timezone.now() + timedelta(days=10)).astimezone(UTC).date()
    response = create(
        alice_client, name="web app", scopes=["gateway", "read"], expiry="date", expiry_date=day.isoformat(),
        stores_calls="on", allowed_origins="HTTPS://App.Example.com/\nhttp://localhost:5173\nhttps://app.example.com:443\n\n",
    )
    assert response.status_code == 200
    token = ApiToken.objects.get(user=alice)
    assert token.name == "web app"
    assert token.scopes == ["gateway", "read"]
    assert token.expires == datetime.combine(day, datetime.min.time(), tzinfo=UTC)
    assert token.stores_calls is True
    assert token.allowed_origins == "https://app.example.com\nhttp://localhost:5173"
    raw = re.search(r'value="(prl_[^"]+)"', response.content.decode()).group(1)
    assert ApiToken.find(raw) == token


def test_the_default_is_a_chat_token_that_never_expires(alice_client, alice):
    form = alice_client.get(URL).content.decode()
    assert re.search(r'<input type="checkbox" name="scopes" value="chat"[^>]* checked', form)
    create(alice_client)
    token = ApiToken.objects.get(user=alice)
    assert token.scopes == ["chat"] and token.expires is None and not token.stores_calls and token.allowed_origins == ""


def test_a_preset_expiry_counts_days_from_now(alice_client, alice):
    before = timezone.now()
    create(alice_client, expiry="30")
    expires = ApiToken.objects.get(user=alice).expires
    assert before + timedelta(days=30) <= expires <= timezone.now() + timedelta(days=30)


@pytest.mark.parametrize(("fields", "error"), [
    ({"scopes": []}, "Choose at least one scope."),
    ({"scopes": ["admin"]}, "Select a valid choice. admin is not one of the available choices."),
    ({"expiry": "date"}, "Choose the day the token expires."),
    ({"expiry": "date", "expiry_date": "2020-01-01"}, "The expiry date must be in the future."),
    ({"expiry": "7"}, "Select a valid choice. 7 is not one of the available choices."),
    ({"allowed_origins": "https://app.example.com/path"}, "is not an origin"),
    ({"allowed_origins": "ftp://files.example.com"}, "is not an origin"),
    ({"allowed_origins": "https://app.example.com:99999"}, "is not an origin"),
    ({"name": "  "}, "This field is required."),
])
def test_bad_input_is_refused_with_a_clear_error(alice_client, alice, fields, error):
    response = create(alice_client, **fields)
    assert response.status_code == 422
    assert error in response.content.decode().replace("&quot;", '"')
    assert not ApiToken.objects.filter(user=alice).exists()


def test_today_is_not_in_the_future(alice_client, alice):
    today = timezone.now().astimezone(UTC).date().isoformat()
    response = create(alice_client, expiry="date", expiry_date=today)
    assert response.status_code == 422
    assert "The expiry date must be in the future." in response.content.decode()


def test_the_list_shows_scopes_expiry_store_setting_and_last_use(alice_client, alice):
    expired, raw = ApiToken.issue(alice, "old one", scopes=["read"], expires=timezone.now() + timedelta(seconds=1))
    ApiToken.objects.filter(pk=expired.pk).update(expires=timezone.now() - timedelta(hours=1))
    live, live_raw = ApiToken.issue(alice, "gateway one", scopes=["chat", "gateway"], stores_calls=True)
    assert ApiToken.find(live_raw) is not None  # marks it used
    page = alice_client.get(URL).content.decode()
    rows = {name: row for row in re.findall(r"<tr>(.*?)</tr>", page, re.S) for name in ["old one", "gateway one"] if name in row}
    assert ">read<" in rows["old one"] and "expired" in rows["old one"] and "never" in rows["old one"]
    assert ">chat<" in rows["gateway one"] and ">gateway<" in rows["gateway one"]
    assert "stored" in rows["gateway one"] and "not stored" not in rows["gateway one"]
    assert "expired" not in rows["gateway one"] and "0\xa0minutes ago" in rows["gateway one"]


def test_names_and_origins_are_escaped(alice_client, alice):
    response = create(alice_client, name="<script>alert(1)</script>", allowed_origins="<b>https://x</b>")
    assert "<b>https://x</b>" not in response.content.decode()
    assert "&lt;b&gt;https://x&lt;/b&gt;" in response.content.decode()
    create(alice_client, name="<script>alert(1)</script>")
    page = alice_client.get(URL).content.decode()
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_revoking_is_for_the_owner_alone(alice_client, alice, bob):
    token, _ = ApiToken.issue(bob, "bob's")
    assert alice_client.post(f"/accounts/tokens/{token.pk}/revoke/").status_code == 404
    token.refresh_from_db()
    assert token.revoked is None
    mine, _ = ApiToken.issue(alice, "mine")
    assert alice_client.post(f"/accounts/tokens/{mine.pk}/revoke/").status_code == 302
    mine.refresh_from_db()
    assert mine.revoked is not None
    assert "mine" not in alice_client.get(URL).content.decode()
