"""Sign-up, log in/out, password change and API tokens, through the Django test client."""

import pytest
from django.urls import reverse

from accounts.models import ApiToken, User

pytestmark = pytest.mark.django_db

PASSWORD = "correct-horse-battery-9"


@pytest.fixture
def user(django_user_model: type[User]) -> User:
    return django_user_model.objects.create_user("alice", password=PASSWORD)


def test_signup_creates_user_and_logs_in(client):
    response = client.post(
        reverse("signup"), {"username": "bob", "password1": PASSWORD, "password2": PASSWORD}
    )
    assert response.status_code == 302
    assert response["Location"] == reverse("chat:home")
    assert User.objects.filter(username="bob").exists()
    assert client.get(reverse("chat:home")).status_code == 200


def test_signup_rejects_mismatched_passwords(client):
    response = client.post(reverse("signup"), {"username": "bob", "password1": PASSWORD, "password2": PASSWORD + "x"})
    assert response.status_code == 422
    assert b"password fields didn" in response.content
    assert not User.objects.filter(username="bob").exists()


def test_signup_rejects_taken_username(client, user):
    response = client.post(reverse("signup"), {"username": "alice", "password1": PASSWORD, "password2": PASSWORD})
    assert response.status_code == 422
    assert b"already exists" in response.content


def test_login_and_logout(client, user):
    page = client.get(reverse("login"))
    assert page.status_code == 200 and b"Log in" in page.content
    response = client.post(reverse("login"), {"username": "alice", "password": PASSWORD})
    assert response.status_code == 302 and response["Location"] == reverse("chat:home")
    assert client.get(reverse("chat:home")).status_code == 200
    assert client.get(reverse("logout")).status_code == 405  # logging out takes a POST
    response = client.post(reverse("logout"))
    assert response.status_code == 302
    assert client.get(reverse("chat:home")).status_code == 302


def test_login_wrong_password_says_so(client, user):
    response = client.post(reverse("login"), {"username": "alice", "password": "nope"})
    assert response.status_code == 200
    assert b"correct username and password" in response.content


def test_password_change(client, user):
    client.force_login(user)
    new = "another-long-passphrase-42"
    response = client.post(
        reverse("password_change"), {"old_password": PASSWORD, "new_password1": new, "new_password2": new}
    )
    assert response.status_code == 302 and response["Location"] == reverse("password_change_done")
    assert client.get(reverse("password_change_done")).status_code == 200
    user.refresh_from_db()
    assert user.check_password(new)


def test_password_change_needs_old_password(client, user):
    client.force_login(user)
    response = client.post(
        reverse("password_change"), {"old_password": "wrong", "new_password1": "x-long-enough-1", "new_password2": "x-long-enough-1"}
    )
    assert response.status_code == 200
    assert b"old password was entered incorrectly" in response.content


def test_token_is_shown_once_then_only_prefix(client, user):
    client.force_login(user)
    response = client.post(reverse("tokens"), {"name": "laptop script", "scopes": ["chat"]})
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    raw = response.context["raw_token"]
    assert raw.startswith("prl_") and raw.encode() in response.content
    token = ApiToken.objects.get(user=user)
    assert token.name == "laptop script" and ApiToken.user_for(raw) == user

    listing = client.get(reverse("tokens"))
    assert raw.encode() not in listing.content
    assert token.prefix.encode() in listing.content
    assert b"laptop script" in listing.content


def test_token_needs_a_name(client, user):
    client.force_login(user)
    response = client.post(reverse("tokens"), {"name": "  "})
    assert response.status_code == 422
    assert b"This field is required" in response.content
    assert not ApiToken.objects.exists()


def test_revoke_token(client, user):
    client.force_login(user)
    token, raw = ApiToken.issue(user, "ci")
    response = client.post(reverse("token_revoke", args=[token.pk]))
    assert response.status_code == 302
    token.refresh_from_db()
    assert token.revoked is not None
    assert ApiToken.user_for(raw) is None
    assert b"ci" not in client.get(reverse("tokens")).content.split(b"Your tokens")[1]


def test_cannot_revoke_someone_elses_token(client, user, django_user_model):
    other = django_user_model.objects.create_user("mallory", password=PASSWORD)
    token, _ = ApiToken.issue(other, "theirs")
    client.force_login(user)
    assert client.post(reverse("token_revoke", args=[token.pk])).status_code == 404
    token.refresh_from_db()
    assert token.revoked is None


def test_account_pages_need_login(client):
    for name in ("tokens", "password_change"):
        response = client.get(reverse(name))
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("login"))
