"""Sign-in throttling: locks per account and address, per address, per account everywhere; the
log-in page and the admin's; the record admins see; Redis away."""

import logging
import time

import pytest
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.urls import reverse

from accounts.models import AuthEvent, User

pytestmark = pytest.mark.django_db

PASSWORD = "correct-horse-battery-9"
LOCKED = "Too many failed sign-ins for this account. Try again in 30 seconds."


class CountingHasher(PBKDF2PasswordHasher):
    """Django's default hasher, counting every password it hashes or checks."""

    calls = 0

    def encode(self, password: str, salt: str, iterations: int | None = None) -> str:
        CountingHasher.calls += 1
        return super().encode(password, salt, iterations)

    def verify(self, password: str, encoded: str) -> bool:
        CountingHasher.calls += 1
        return super().verify(password, encoded)


@pytest.fixture
def user(django_user_model: type[User]) -> User:
    return django_user_model.objects.create_user("alice", password=PASSWORD)


def sign_in(client, username: str = "alice", password: str = "wrong", address: str = "127.0.0.1", **extra):
    return client.post(reverse("login"), {"username": username, "password": password}, REMOTE_ADDR=address, **extra)


def fail(client, times: int, username: str = "alice", address: str = "127.0.0.1", **extra):
    responses = [sign_in(client, username, "wrong", address, **extra) for _ in range(times)]
    return responses[-1]


def signed_in(client) -> bool:
    return client.get(reverse("chat:home")).status_code == 200


def test_fifth_wrong_password_locks_the_account_and_says_so(client, user):
    response = fail(client, 4)
    assert response.status_code == 200 and b"correct username and password" in response.content
    response = sign_in(client)
    assert response.status_code == 429
    assert response["Retry-After"] == "30"
    assert LOCKED in response.content.decode()
    assert b"correct username and password" not in response.content


def test_sixth_attempt_is_refused_without_checking_the_password(client, user, settings):
    fail(client, 5)
    settings.PASSWORD_HASHERS = ["tests.test_sign_in_throttle.CountingHasher"]
    CountingHasher.calls = 0
    response = sign_in(client, password=PASSWORD)
    assert response.status_code == 429
    assert LOCKED[:-len("30 seconds.")] in response.content.decode()
    assert CountingHasher.calls == 0, "a locked sign-in must not cost a password hash"
    assert not signed_in(client)


def test_right_password_is_accepted_once_the_lock_ends(client, user, settings):
    settings.PARLEY_SIGNIN_LOCK_SECONDS = 1
    response = fail(client, 5)
    assert response.status_code == 429 and "Try again in 1 second." in response.content.decode()
    assert sign_in(client, password=PASSWORD).status_code == 429
    time.sleep(1.1)
    response = sign_in(client, password=PASSWORD)
    assert response.status_code == 302 and signed_in(client)


def test_a_successful_sign_in_starts_the_count_again(client, user):
    fail(client, 4)
    assert sign_in(client, password=PASSWORD).status_code == 302
    client.post(reverse("logout"))
    assert fail(client, 4).status_code == 200
    assert sign_in(client, password=PASSWORD).status_code == 302


def test_each_further_lock_lasts_twice_as_long_up_to_the_cap(client, user, settings):
    settings.PARLEY_SIGNIN_LOCK_SECONDS = 1
    settings.PARLEY_SIGNIN_LOCK_MAX_SECONDS = 3
    waits = []
    for _ in range(3):
        response = fail(client, 5)
        assert response.status_code == 429
        waits.append(int(response["Retry-After"]))
        time.sleep(waits[-1] + 0.1)
    assert waits == [1, 2, 3]


def test_guesses_from_one_address_do_not_lock_the_owner_out_elsewhere(client, user):
    assert fail(client, 5, address="203.0.113.9").status_code == 429
    assert sign_in(client, password=PASSWORD, address="203.0.113.9").status_code == 429
    response = sign_in(client, password=PASSWORD, address="198.51.100.7")
    assert response.status_code == 302 and signed_in(client)


def test_guesses_spread_over_many_addresses_lock_the_account_except_where_its_owner_signs_in(client, user, settings):
    settings.PARLEY_SIGNIN_ACCOUNT_FAILURES = 6
    assert sign_in(client, password=PASSWORD, address="198.51.100.7").status_code == 302  # the owner's usual address
    client.post(reverse("logout"))
    for n in range(6):
        response = sign_in(client, address=f"203.0.113.{n}")
    assert response.status_code == 429 and LOCKED in response.content.decode()
    assert sign_in(client, password=PASSWORD, address="203.0.113.200").status_code == 429
    response = sign_in(client, password=PASSWORD, address="198.51.100.7")
    assert response.status_code == 302 and signed_in(client)


def test_one_address_trying_many_usernames_is_locked_for_accounts_not_used_there(client, user, django_user_model, settings):
    settings.PARLEY_SIGNIN_ADDRESS_FAILURES = 6
    django_user_model.objects.create_user("bob", password=PASSWORD)
    assert sign_in(client, "bob", PASSWORD, address="192.0.2.1").status_code == 302  # bob signs in from here
    client.post(reverse("logout"))
    for n in range(6):
        response = sign_in(client, f"guess{n}", address="192.0.2.1")
    assert response.status_code == 429
    assert "Too many failed sign-ins from your network. Try again in 30 seconds." in response.content.decode()
    assert sign_in(client, "alice", PASSWORD, address="192.0.2.1").status_code == 429
    assert sign_in(client, "bob", PASSWORD, address="192.0.2.1").status_code == 302


def test_usernames_differing_only_in_case_share_one_count(client, user):
    for username in ("alice", "Alice", "ALICE", "alicE", "aLice"):
        response = sign_in(client, username)
    assert response.status_code == 429
    assert sign_in(client, password=PASSWORD).status_code == 429


def test_an_unknown_username_is_locked_alike(client):
    response = fail(client, 5, username="nobody-here")
    assert response.status_code == 429 and LOCKED in response.content.decode()


def test_admin_login_is_throttled_too(client, django_user_model):
    django_user_model.objects.create_user("root", password=PASSWORD, is_staff=True, is_superuser=True)
    url = reverse("admin:login")
    for _ in range(5):
        response = client.post(url, {"username": "root", "password": "wrong", "next": "/admin/"})
    assert response.status_code == 429 and response["Retry-After"] == "30"
    assert LOCKED in response.content.decode()
    response = client.post(url, {"username": "root", "password": PASSWORD, "next": "/admin/"})
    assert response.status_code == 429
    assert client.get("/admin/").status_code == 302  # still signed out


def test_a_lock_is_recorded_for_admins_and_logged(client, user, admin_client, caplog):
    with caplog.at_level(logging.WARNING, logger="accounts.throttle"):
        fail(client, 5, address="203.0.113.9")
    event = AuthEvent.objects.get()
    assert (event.kind, event.username, event.address, event.seconds) == (
        AuthEvent.Kind.ACCOUNT_AT_ADDRESS, "alice", "203.0.113.9", 30
    )
    assert any("Sign-in locked for 30 s" in record.getMessage() and "203.0.113.9" in record.getMessage()
               for record in caplog.records)
    page = admin_client.get(reverse("admin:accounts_authevent_changelist"))
    assert page.status_code == 200 and b"203.0.113.9" in page.content
    assert admin_client.get(reverse("admin:accounts_authevent_add")).status_code == 403


def test_wrong_passwords_below_the_limit_leave_no_record(client, user):
    fail(client, 4)
    assert not AuthEvent.objects.exists()


def test_an_admin_can_lift_a_lock(client, user, admin_client):
    fail(client, 5)
    event = AuthEvent.objects.get()
    response = admin_client.post(
        reverse("admin:accounts_authevent_changelist"), {"action": "lift", "_selected_action": [event.pk]}
    )
    assert response.status_code == 302
    assert sign_in(client, password=PASSWORD).status_code == 302


def test_ipv6_clients_count_by_their_64_network(client, user):
    for n in range(5):
        response = sign_in(client, address=f"2001:db8:1:2::{n + 1:x}")
    assert response.status_code == 429
    assert sign_in(client, password=PASSWORD, address="2001:db8:1:2:ffff::1").status_code == 429
    assert sign_in(client, password=PASSWORD, address="2001:db8:1:3::1").status_code == 302
    assert AuthEvent.objects.get().address == "2001:db8:1:2::/64"


def test_x_forwarded_for_is_ignored_unless_proxies_are_trusted(client, user):
    for n in range(5):
        response = sign_in(client, HTTP_X_FORWARDED_FOR=f"198.51.100.{n}")
    assert response.status_code == 429, "a client cannot escape the count by writing its own header"


def test_behind_a_trusted_proxy_the_address_it_saw_counts(client, user, settings):
    settings.PARLEY_TRUSTED_PROXIES = 1
    proxy = "10.0.0.2"
    for n in range(5):
        # The entry left of the proxy's is the client's own writing and changes every time.
        response = sign_in(client, address=proxy, HTTP_X_FORWARDED_FOR=f"192.0.2.{n}, 203.0.113.9")
    assert response.status_code == 429
    assert AuthEvent.objects.get().address == "203.0.113.9"
    response = sign_in(client, password=PASSWORD, address=proxy, HTTP_X_FORWARDED_FOR="203.0.113.10")
    assert response.status_code == 302, "another client behind the same proxy is not locked"


def test_sign_in_works_while_redis_is_unreachable(client, user, settings, caplog):
    settings.REDIS_URL = "redis://127.0.0.1:9/0"
    with caplog.at_level(logging.WARNING, logger="accounts.throttle"):
        assert sign_in(client).status_code == 200
        response = sign_in(client, password=PASSWORD)
    assert response.status_code == 302 and signed_in(client)
    assert any("Redis unreachable" in record.getMessage() for record in caplog.records)
