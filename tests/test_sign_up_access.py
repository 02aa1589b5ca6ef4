"""Who may sign up: the per-address limit, and sign-up open, by invitation only or closed."""

import logging
import re
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accounts.models import AuthEvent, Invitation, SiteSettings, User

pytestmark = pytest.mark.django_db

PASSWORD = "correct-horse-battery-9"


def sign_up(client: Client, username: str, address: str = "127.0.0.1", **fields: str):
    data = {"username": username, "password1": PASSWORD, "password2": PASSWORD, **fields}
    return client.post(reverse("signup"), data, REMOTE_ADDR=address)


def set_signup(mode: str) -> None:
    SiteSettings.objects.update_or_create(pk=1, defaults={"signup": mode})


@pytest.fixture
def invitation() -> Invitation:
    return Invitation.objects.create(email="carol@example.com")


def test_fourth_sign_up_from_one_address_within_an_hour_is_refused_in_plain_words(caplog):
    for n in range(3):
        assert sign_up(Client(), f"user{n}").status_code == 302
    with caplog.at_level(logging.WARNING, logger="accounts.throttle"):
        response = sign_up(Client(), "user3")
        again = sign_up(Client(), "user4")
    assert response.status_code == 429 and again.status_code == 429
    assert int(response["Retry-After"]) > 3500
    text = response.content.decode()
    assert re.search(r"Too many accounts created from your network\. Try again in (1 hour|60 minutes)\.", text)
    assert not User.objects.filter(username__in=["user3", "user4"]).exists()
    event = AuthEvent.objects.get()  # one record per address and hour, however often it is refused
    assert (event.kind, event.address, event.username) == (AuthEvent.Kind.SIGNUP, "127.0.0.1", "user3")
    assert any("Sign-ups refused" in record.getMessage() for record in caplog.records)
    page = Client().get(reverse("signup"))
    assert page.status_code == 429 and b"Too many accounts created" in page.content
    assert b'name="password1"' not in page.content


def test_sign_ups_that_fail_validation_do_not_count(client):
    for _ in range(4):
        assert sign_up(client, "", address="192.0.2.5").status_code == 422
    assert sign_up(client, "dora", address="192.0.2.5").status_code == 302


def test_sign_ups_from_another_address_are_not_refused(settings):
    settings.PARLEY_SIGNUPS_PER_HOUR = 1
    assert sign_up(Client(), "erin", address="192.0.2.1").status_code == 302
    assert sign_up(Client(), "frank", address="192.0.2.1").status_code == 429
    assert sign_up(Client(), "frank", address="198.51.100.1").status_code == 302


def test_closed_sign_up_shows_a_sentence_and_no_form(client):
    set_signup(SiteSettings.SignUp.CLOSED)
    page = client.get(reverse("signup"))
    assert page.status_code == 200
    assert b"Sign-up is closed" in page.content and b'name="password1"' not in page.content
    assert sign_up(client, "gina").status_code == 403
    assert not User.objects.filter(username="gina").exists()
    assert b"Create an account" not in client.get(reverse("login")).content


def test_open_sign_up_is_linked_from_the_login_page(client):
    assert b"New here?" in client.get(reverse("login")).content


def test_invitation_only_sign_up_needs_a_code(client):
    set_signup(SiteSettings.SignUp.INVITATION)
    assert b"Have an invitation?" in client.get(reverse("login")).content
    response = sign_up(client, "hank")
    assert response.status_code == 422 and b"This field is required" in response.content
    response = sign_up(client, "hank", invite="no-such-code")
    assert response.status_code == 422 and b"No invitation has this code" in response.content
    assert not User.objects.filter(username="hank").exists()


def test_a_valid_invitation_creates_the_account_and_is_used_up(client, invitation):
    set_signup(SiteSettings.SignUp.INVITATION)
    response = sign_up(client, "carol", invite=invitation.code)
    assert response.status_code == 302
    carol = User.objects.get(username="carol")
    invitation.refresh_from_db()
    assert invitation.used_by == carol and invitation.used_at is not None
    assert carol.email == "carol@example.com"
    response = sign_up(Client(), "mallory", invite=invitation.code)
    assert response.status_code == 422 and b"This invitation has already been used." in response.content
    assert not User.objects.filter(username="mallory").exists()


def test_an_expired_invitation_is_refused(client, invitation):
    set_signup(SiteSettings.SignUp.INVITATION)
    Invitation.objects.filter(pk=invitation.pk).update(expires=timezone.now() - timedelta(minutes=1))
    response = sign_up(client, "carol", invite=invitation.code)
    assert response.status_code == 422 and b"This invitation expired on" in response.content
    assert not User.objects.filter(username="carol").exists()


def test_the_invitation_link_fills_in_the_code(client, invitation):
    set_signup(SiteSettings.SignUp.INVITATION)
    page = client.get(reverse("signup") + f"?invite={invitation.code}")
    assert page.status_code == 200
    assert f'value="{invitation.code}"'.encode() in page.content


def test_invited_sign_ups_do_not_count_toward_the_address_limit(settings, invitation):
    settings.PARLEY_SIGNUPS_PER_HOUR = 1
    assert sign_up(Client(), "ivan").status_code == 302
    assert sign_up(Client(), "judy").status_code == 429
    assert sign_up(Client(), "carol", invite=invitation.code).status_code == 302


def test_an_admin_switches_sign_up_off_without_a_restart(admin_client, client):
    settings_page = admin_client.get(reverse("admin:accounts_sitesettings_changelist"), follow=True)
    assert settings_page.status_code == 200 and b"Sign-up" in settings_page.content
    url = reverse("admin:accounts_sitesettings_change", args=[1])
    # The form's other fields, as the page submits them (the agent runs' defaults).
    rest = {"run_max_steps": 30, "run_max_seconds": 900, "run_max_tokens": 200000, "run_max_cost": "1.00",
            "approval_expiry_minutes": 1440}
    assert admin_client.post(url, {"signup": "closed", **rest}).status_code == 302
    assert b"Sign-up is closed" in client.get(reverse("signup")).content
    assert admin_client.post(url, {"signup": "invitation", **rest}).status_code == 302
    assert b"Sign-up is by invitation" in client.get(reverse("signup")).content


def test_an_admin_creates_an_invitation_with_its_link(admin_client):
    expires = (timezone.now() + timedelta(days=3)).strftime("%Y-%m-%d")
    response = admin_client.post(
        reverse("admin:accounts_invitation_add"),
        {"email": "kim@example.com", "expires_0": expires, "expires_1": "12:00:00"},
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    invitation = Invitation.objects.get()
    assert invitation.created_by.username == "admin" and invitation.email == "kim@example.com"
    page = admin_client.get(reverse("admin:accounts_invitation_change", args=[invitation.pk]))
    assert f"/accounts/signup/?invite={invitation.code}".encode() in page.content


def test_sign_up_is_refused_in_plain_words_while_redis_is_unreachable(client, settings):
    settings.REDIS_URL = "redis://127.0.0.1:9/0"
    response = sign_up(client, "lena")
    assert response.status_code == 503
    assert b"Sign-up is unavailable for a moment" in response.content
    assert not User.objects.filter(username="lena").exists()
